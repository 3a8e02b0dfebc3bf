//! The boot GDT and the segment registers loaded from it.
//!
//! Both boot protocols enter the kernel with flat segments; Linux replaces the GDT early,
//! but the descriptors must be valid until it does.

use kvm_bindings::kvm_segment;

/// Builds a GDT descriptor from its access/flags word, base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    // Granularity in 4 KiB pages: the register holds the byte limit.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The KVM segment register for GDT slot `index` holding `entry`.
pub fn segment(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let present = bit(47);
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// The boot GDT for a protocol: null, code, data, TSS.
pub fn boot_gdt(long_mode: bool) -> [u64; 4] {
    let code = if long_mode { 0xa09b } else { 0xc09b };
    [
        gdt_entry(0, 0, 0),
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_segments() {
        let gdt = boot_gdt(false);
        let cs = segment(gdt[1], 1);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!((cs.type_, cs.db, cs.l, cs.present, cs.s), (0xb, 1, 0, 1, 1));
        let cs64 = segment(boot_gdt(true)[1], 1);
        assert_eq!((cs64.db, cs64.l), (0, 1));
        let ds = segment(gdt[2], 2);
        assert_eq!((ds.type_, ds.selector), (3, 16));
        assert_eq!(segment(0, 0).unusable, 1);
    }
}
