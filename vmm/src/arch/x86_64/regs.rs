//! The boot vCPU's registers for each entry protocol.
//!
//! PVH: 32-bit protected mode, paging off, `rbx` = start info. 64-bit Linux boot: long
//! mode on identity tables, `rsi` = zero page. Both with flat segments from the boot GDT.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::{gdt, layout};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH entry point from the vmlinux ELF note.
    Pvh,
    /// 64-bit entry of a vmlinux without PVH note, or `startup_64` of a bzImage.
    Linux64,
}

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    pub addr: u64,
    pub protocol: BootProtocol,
    /// The PVH start info or zero page address.
    pub boot_info: u64,
}

/// General-purpose registers at entry.
pub fn boot_regs(entry: &EntryPoint) -> kvm_regs {
    let mut regs = kvm_regs {
        rip: entry.addr,
        rflags: 0x2,
        ..Default::default()
    };
    match entry.protocol {
        BootProtocol::Pvh => regs.rbx = entry.boot_info,
        BootProtocol::Linux64 => {
            regs.rsi = entry.boot_info;
            regs.rsp = layout::BOOT_STACK;
            regs.rbp = layout::BOOT_STACK;
        }
    }
    regs
}

/// Writes the boot GDT and an empty IDT to guest memory.
pub fn write_gdt(mem: &GuestMemoryMmap, protocol: BootProtocol) -> Result<(), GuestMemoryError> {
    let table = gdt::boot_gdt(protocol == BootProtocol::Linux64);
    for (i, entry) in table.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT))
}

/// Segment and control registers at entry, on top of the vCPU's reset values.
pub fn boot_sregs(sregs: &mut kvm_sregs, protocol: BootProtocol, cr3: u64) {
    let table = gdt::boot_gdt(protocol == BootProtocol::Linux64);
    let code = gdt::segment(table[1], 1);
    let data = gdt::segment(table[2], 2);
    let tss = gdt::segment(table[3], 3);
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr3 = cr3;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
}

/// x87/SSE state at entry: the values `FNINIT` and a reset MXCSR give.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lvt_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Routes LINT0 to the PIC's ExtINT and LINT1 to NMI, as the MP table says.
pub fn boot_lapic(lapic: &mut kvm_lapic_state) {
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let raw = &mut lapic.regs[offset..offset + 4];
        let bytes: [u8; 4] = std::array::from_fn(|i| raw[i] as u8);
        let value = lvt_mode(u32::from_le_bytes(bytes), mode);
        for (dst, src) in raw.iter_mut().zip(value.to_le_bytes()) {
            *dst = src as std::os::raw::c_char;
        }
    }
}
