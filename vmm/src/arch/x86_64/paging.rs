//! Identity page tables for the 64-bit boot protocol: the first GiB mapped with 2 MiB
//! pages, enough to reach a kernel loaded at 1 or 16 MiB and its boot data.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::layout::{PDE, PDPTE, PML4};

/// Writes the tables and returns the CR3 value.
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<u64, GuestMemoryError> {
    mem.write_obj(PDPTE | 0x03, GuestAddress(PML4))?;
    mem.write_obj(PDE | 0x03, GuestAddress(PDPTE))?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE + i * 8))?;
    }
    Ok(PML4)
}
