//! The Intel MultiProcessor table: how a guest without ACPI finds its CPUs, its IOAPIC and
//! the ISA interrupt routing. Written at the EBDA, where Linux scans for `_MP_`.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::layout;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 in the CPU signature; Linux only logs it.
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
const HEADER_LEN: usize = 44;

/// Builds the table for `vcpus` CPUs; the IOAPIC gets the APIC id after the last CPU.
pub fn build(vcpus: u8) -> Vec<u8> {
    let table_addr = layout::EBDA + 16;
    let ioapic_id = vcpus + 1;
    let mut entries = Vec::new();
    let mut count = 0u16;
    for id in 0..vcpus {
        entries.push(0); // processor
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(layout::IOAPIC as u32).to_le_bytes());
    count += 1;
    // Identity routing of the ISA IRQs (and the virtio GSIs) to the IOAPIC pins. IRQ 0 too:
    // Linux's timer check wants the PIT as an ordinary IOAPIC input.
    for irq in 0..layout::IOAPIC_PINS as u8 {
        entries.extend_from_slice(&[3, MP_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // The BSP's LINT0 takes the PIC's ExtINT; every LAPIC's LINT1 the NMI.
    entries.extend_from_slice(&[4, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"WARD    ");
    header.extend_from_slice(b"WARD-VMM    ");
    header.extend_from_slice(&[0; 4]); // OEM table
    header.extend_from_slice(&[0; 2]);
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&(layout::LAPIC as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    floating[10] = checksum(&floating);

    floating.extend_from_slice(&table);
    floating
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Writes the table for `vcpus` CPUs into guest memory.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), GuestMemoryError> {
    mem.write_slice(&build(vcpus), GuestAddress(layout::EBDA))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts() {
        let t = build(2);
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        // 2 CPUs + bus + IOAPIC + 24 routes + 2 local
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 30);
        // Fits in the EBDA's first KiB, where Linux looks.
        assert!(t.len() <= 1024, "{}", t.len());
        assert!(build(32).len() < (layout::HIMEM - layout::EBDA) as usize);
    }
}
