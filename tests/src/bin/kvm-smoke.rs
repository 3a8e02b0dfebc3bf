//! kvm-smoke: proves a `/dev/kvm` runs guest code and delivers its port and MMIO exits.
//!
//! A 64-bit guest, entered directly in long mode (no firmware, no real-mode steps), does
//! `out 0x10, 42`, writes 0x77 to MMIO address 0x1000_0000 and halts. The program prints
//! each exit as it sees it and exits 0 only when all three arrived with those values.
//! `--cpl 3` runs the guest in ring 3 (IOPL 3), which is all some KVMs (PVM) run natively.

use std::process::ExitCode;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};

const MEM_SIZE: usize = 2 << 20;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const GDT: u64 = 0x500;
const CODE: u64 = 0x8000;
const PIO_PORT: u16 = 0x10;
const PIO_VALUE: u8 = 42;
const MMIO_ADDR: u64 = 0x1000_0000;
const MMIO_VALUE: u8 = 0x77;

fn main() -> ExitCode {
    let cpl3 = std::env::args().skip(1).collect::<Vec<_>>() == ["--cpl", "3"];
    match run(cpl3) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("kvm-smoke: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cpl3: bool) -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;

    // SAFETY: anonymous private mapping, no file, checked for MAP_FAILED below.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `host` is a live mapping of MEM_SIZE bytes that nothing else references; it is
    // never unmapped, so the slice lives as long as the process.
    let mem = unsafe { std::slice::from_raw_parts_mut(host.cast::<u8>(), MEM_SIZE) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host as u64,
    };
    // SAFETY: the region describes the mapping above, which outlives the VM.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;

    write_guest(mem, cpl3);

    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // Long mode is only valid for a vCPU whose CPUID says it has it.
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let rpl = if cpl3 { 3 } else { 0 };
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: if cpl3 { (3 << 3) | 3 } else { 1 << 3 },
        type_: 11,
        present: 1,
        dpl: rpl,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: if cpl3 { (4 << 3) | 3 } else { 2 << 3 },
        type_: 3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0033; // PG | NE | ET | MP | PE
    sregs.efer = 0x500; // LMA | LME
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = CODE;
    regs.rsp = CODE;
    regs.rflags = 0x2 | (3 << 12); // IOPL 3: `out` allowed in ring 3
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

    let (mut pio, mut mmio) = (false, false);
    for _ in 0..16 {
        match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::IoOut(port, data) => {
                println!("pio port={port:#x} value={}", data[0]);
                pio = port == PIO_PORT && data == [PIO_VALUE];
            }
            VcpuExit::MmioWrite(addr, data) => {
                println!("mmio addr={addr:#x} value={:#x}", data[0]);
                mmio = addr == MMIO_ADDR && data == [MMIO_VALUE];
            }
            // In ring 3 `hlt` faults; with no IDT that is a triple fault, which KVM reports
            // as a shutdown. Either way the guest has stopped where it was told to.
            exit @ (VcpuExit::Hlt | VcpuExit::Shutdown) => {
                println!("stopped ({exit:?})");
                return if pio && mmio {
                    Ok(())
                } else {
                    Err(format!(
                        "guest stopped early (pio seen: {pio}, mmio seen: {mmio})"
                    ))
                };
            }
            other => return Err(format!("unexpected exit {other:?}")),
        }
    }
    Err("guest did not stop after 16 exits".into())
}

/// Identity-maps the first GiB with 2 MiB pages, writes a GDT and the guest code.
fn write_guest(mem: &mut [u8], user: bool) {
    let put = |mem: &mut [u8], at: u64, v: u64| {
        mem[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    let us = if user { 0x4 } else { 0 };
    put(mem, PML4, PDPT | 0x3 | us);
    put(mem, PDPT, PD | 0x3 | us);
    for i in 0..512u64 {
        put(mem, PD + i * 8, (i << 21) | 0x83 | us);
    }
    let gdt = [
        0,
        0x00af_9b00_0000_ffff, // ring-0 code64
        0x00cf_9300_0000_ffff, // ring-0 data
        0x00af_fb00_0000_ffff, // ring-3 code64
        0x00cf_f300_0000_ffff, // ring-3 data
    ];
    for (i, entry) in gdt.iter().enumerate() {
        put(mem, GDT + i as u64 * 8, *entry);
    }
    let code: [u8; 11] = [
        0xb0,
        PIO_VALUE, // mov al, 42
        0xe6,
        PIO_PORT as u8, // out 0x10, al
        0xbb,
        0x00,
        0x00,
        0x00,
        0x10, // mov ebx, 0x10000000
        0xb0,
        MMIO_VALUE, // mov al, 0x77
    ];
    let at = CODE as usize;
    mem[at..at + code.len()].copy_from_slice(&code);
    mem[at + code.len()..at + code.len() + 3].copy_from_slice(&[
        0x88, 0x03, // mov [rbx], al
        0xf4, // hlt
    ]);
}
