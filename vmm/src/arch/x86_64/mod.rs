//! x86_64 guest layout and boot structures.
//!
//! Guest physical memory: RAM from 0 up to the 32-bit MMIO gap (`0xd000_0000`), the rest of
//! RAM from 4 GiB. The gap holds the virtio-mmio slots, the IOAPIC and the LAPIC.

pub mod boot_info;
pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod msrs;
pub mod paging;
pub mod regs;

use vm_memory::GuestAddress;

/// Fixed guest-physical addresses.
pub mod layout {
    /// The boot GDT (PVH and 64-bit entry).
    pub const GDT: u64 = 0x500;
    /// The boot IDT (empty; interrupts stay off until the kernel installs its own).
    pub const IDT: u64 = 0x520;
    /// PVH `hvm_start_info`, followed by its module list and memory map.
    pub const PVH_INFO: u64 = 0x6000;
    pub const PVH_MODLIST: u64 = 0x6040;
    pub const PVH_MEMMAP: u64 = 0x6080;
    /// Linux zero page (`boot_params`) for the 64-bit boot protocol.
    pub const ZERO_PAGE: u64 = 0x7000;
    /// Initial stack of the 64-bit boot protocol.
    pub const BOOT_STACK: u64 = 0x8ff0;
    /// Identity page tables for the 64-bit boot protocol (first GiB, 2 MiB pages).
    pub const PML4: u64 = 0x9000;
    pub const PDPTE: u64 = 0xa000;
    pub const PDE: u64 = 0xb000;
    /// Kernel command line and its size limit (x86 `COMMAND_LINE_SIZE`).
    pub const CMDLINE: u64 = 0x20000;
    pub const CMDLINE_MAX: usize = 2048;
    /// Start of the extended BIOS data area: the MP table lives here, where Linux scans.
    pub const EBDA: u64 = 0x9fc00;
    /// First byte above the legacy hole: where kernels load.
    pub const HIMEM: u64 = 0x10_0000;
    /// Highest address a kernel image starts at (vmlinux ELFs use 16 MiB).
    pub const KERNEL_MAX_LOAD: u64 = 16 << 20;
    /// 32-bit MMIO gap: virtio-mmio slots from its start, then IOAPIC and LAPIC.
    pub const MMIO_GAP_START: u64 = 0xd000_0000;
    pub const MMIO_GAP_END: u64 = 1 << 32;
    /// Size of one virtio-mmio slot.
    pub const MMIO_SLOT_SIZE: u64 = 0x1000;
    /// Number of virtio-mmio slots (they stay clear of the IOAPIC).
    pub const MMIO_SLOTS: u64 = 64;
    pub const IOAPIC: u64 = 0xfec0_0000;
    pub const LAPIC: u64 = 0xfee0_0000;
    /// GSIs the IOAPIC routes (KVM's in-kernel IOAPIC has 24 pins).
    pub const IOAPIC_PINS: u32 = 24;
    /// First GSI handed to virtio-mmio devices (0–4 are PIT, keyboard, cascade, COM2, COM1).
    pub const FIRST_DEVICE_GSI: u32 = 5;
    /// Serial console COM1 and its GSI.
    pub const COM1: u64 = 0x3f8;
    pub const COM1_GSI: u32 = 4;
    /// i8042 keyboard controller (data port at 0x60, command/status at 0x64).
    pub const I8042: u64 = 0x60;
    /// ward's boot-time port: see `devices::legacy::boot_port`.
    pub const BOOT_PORT: u64 = 0x3f0;
    /// KVM's three private pages for the TSS on Intel (just below the BIOS area).
    pub const KVM_TSS: u64 = 0xfffb_d000;
    /// KVM's identity-map page on Intel.
    pub const KVM_IDENTITY_MAP: u64 = 0xfffb_c000;
}

/// End of RAM below the MMIO gap for a guest with `mem_bytes` of memory.
pub fn low_mem_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(layout::MMIO_GAP_START)
}

/// The RAM ranges for `mem_bytes` of guest memory: one below the MMIO gap and, for large
/// guests, the remainder above 4 GiB.
pub fn memory_ranges(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    let low = low_mem_end(mem_bytes);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if mem_bytes > low {
        ranges.push((
            GuestAddress(layout::MMIO_GAP_END),
            (mem_bytes - low) as usize,
        ));
    }
    ranges
}

/// An e820 entry type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
}

/// The guest's memory map (same for PVH and the zero page): RAM below the EBDA, the
/// legacy hole reserved, RAM from 1 MiB, and the high RAM.
pub fn e820_map(mem_bytes: u64) -> Vec<(u64, u64, E820Type)> {
    let low = low_mem_end(mem_bytes);
    let mut map = vec![
        (0, layout::EBDA, E820Type::Ram),
        (
            layout::EBDA,
            layout::HIMEM - layout::EBDA,
            E820Type::Reserved,
        ),
        (layout::HIMEM, low - layout::HIMEM, E820Type::Ram),
    ];
    if mem_bytes > low {
        map.push((layout::MMIO_GAP_END, mem_bytes - low, E820Type::Ram));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(memory_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let map = e820_map(256 << 20);
        let ram: u64 = map
            .iter()
            .filter(|e| e.2 == E820Type::Ram)
            .map(|e| e.1)
            .sum();
        assert_eq!(ram, (256 << 20) - (layout::HIMEM - layout::EBDA));
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let r = memory_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64, layout::MMIO_GAP_START);
        assert_eq!(r[1].0, GuestAddress(1 << 32));
        assert_eq!(r[0].1 + r[1].1, 4 << 30);
    }
}
