//! cgroup v2 device rules: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built from the OCI
//! device list and attached to the container's cgroup (v2 has no devices.allow file).
//!
//! Rules are checked last to first and the first match decides, which is what applying
//! them in order to a v1 allow-list means; with no match the request is allowed (a new v1
//! cgroup allows everything until a rule says otherwise; specs start with "deny all").

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::container::error::{Error, Result};

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const EXIT: u8 = 0x95;

/// BPF_DEVCG_ACC_* bits of an OCI access string ("rwm").
fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |b, c| match c {
        'm' => b | 1,
        'r' => b | 2,
        'w' => b | 4,
        _ => b,
    })
}

/// Compiles the rules. Registers: r2 device type, r3 access, r4 major, r5 minor, r1 scratch.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0), // r2 = ctx->access_type
        insn(MOV_X, 3, 2, 0, 0), // r3 = r2
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0), // r4 = ctx->major
        insn(LDX_W, 5, 1, 8, 0), // r5 = ctx->minor
    ];
    for rule in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each "skip" jump is patched to land just past this block.
        let mut skips: Vec<usize> = Vec::new();
        match rule.typ() {
            Some(LinuxDeviceType::C) => {
                skips.push(block.len());
                block.push(insn(JNE_K, 2, 0, 0, 2)); // BPF_DEVCG_DEV_CHAR
            }
            Some(LinuxDeviceType::B) => {
                skips.push(block.len());
                block.push(insn(JNE_K, 2, 0, 0, 1)); // BPF_DEVCG_DEV_BLOCK
            }
            _ => {}
        }
        let bits = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        if rule.allow() {
            // Allow only if every requested access is in the rule.
            if bits != 7 {
                skips.push(block.len());
                block.push(insn(JSET_K, 3, 0, 0, !bits & 7));
            }
        } else {
            // Deny if any requested access is in the rule.
            block.push(insn(MOV_X, 1, 3, 0, 0));
            block.push(insn(AND_K, 1, 0, 0, bits));
            skips.push(block.len());
            block.push(insn(JEQ_K, 1, 0, 0, 0));
        }
        if let Some(major) = rule.major().filter(|m| *m >= 0) {
            skips.push(block.len());
            block.push(insn(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor().filter(|m| *m >= 0) {
            skips.push(block.len());
            block.push(insn(JNE_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(MOV_K, 0, 0, 0, i32::from(rule.allow())));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for at in skips {
            block[at].off = (len - at - 1) as i16;
        }
        p.extend(block);
    }
    p.push(insn(MOV_K, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is the repr(C) attribute struct the kernel expects for `cmd`, and its
    // size is passed along; every pointer inside it refers to memory that outlives the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) }
}

/// Loads the program for `rules`. The verifier's log is only asked for when a load fails:
/// a log that outgrows its buffer fails the load itself (ENOSPC), and a long rule list
/// writes a long log.
pub fn load(rules: &[LinuxDeviceCgroup]) -> Result<OwnedFd> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 {
        let errno = nix::errno::Errno::last();
        // Again, for the verifier's reasons.
        let mut log = vec![0u8; 1 << 20];
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        let retry = bpf(BPF_PROG_LOAD, &mut attr);
        if retry >= 0 {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            drop(unsafe { OwnedFd::from_raw_fd(retry as i32) });
        }
        let verifier = String::from_utf8_lossy(&log);
        let verifier = verifier.trim_end_matches('\0').trim();
        // The end of the log says why.
        let start = verifier.len().saturating_sub(2000);
        let start = (start..verifier.len())
            .find(|i| verifier.is_char_boundary(*i))
            .unwrap_or(0);
        let tail = &verifier[start..];
        return Err(Error::sys(
            format!(
                "load cgroup device BPF program ({} insns): {}",
                insns.len(),
                tail
            ),
            errno,
        ));
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `prog` to the cgroup at `dir`, then detaches `old` (an update replaces the
/// rules rather than adding to them: attached programs must all allow).
pub fn attach(dir: &Path, prog: &OwnedFd, old: Option<&OwnedFd>) -> Result<()> {
    let cg = std::fs::File::open(dir).map_err(|e| Error::io("open cgroup", dir, e))?;
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    if bpf(BPF_PROG_ATTACH, &mut attr) < 0 {
        return Err(Error::sys(
            format!("attach device BPF program to {}", dir.display()),
            nix::errno::Errno::last(),
        ));
    }
    if let Some(old) = old {
        attr.attach_bpf_fd = old.as_raw_fd() as u32;
        attr.attach_flags = 0;
        if bpf(BPF_PROG_DETACH, &mut attr) < 0 {
            return Err(Error::sys(
                format!(
                    "detach the previous device BPF program from {}",
                    dir.display()
                ),
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn deny_all_then_allow_null_compiles_last_rule_first() {
        let p = program(&rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#,
        ));
        // prologue 6, allow c 1:3 (type, major, minor, mov, exit) 5, deny all (mov, and, jeq, mov, exit) 5, default 2
        assert_eq!(p.len(), 18);
        assert_eq!(
            p[6],
            insn(JNE_K, 2, 0, 4, 2),
            "type check skips the rest of its block"
        );
        assert_eq!(p[9], insn(MOV_K, 0, 0, 0, 1));
        assert_eq!(p[15], insn(EXIT, 0, 0, 0, 0));
        assert_eq!(p[14], insn(MOV_K, 0, 0, 0, 0), "deny all returns 0");
    }
}
