//! The five capability sets of the container process (bounding, effective, permitted,
//! inheritable, ambient), set with prctl and capset(2) just before exec.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxCapabilities};

use super::error::{Error, Result};

/// Kernel capability names in number order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel number of a capability, `None` when this build does not know it.
pub fn number(cap: &Capability) -> Option<u32> {
    let name = serde_json::to_value(cap).ok()?;
    NAMES
        .iter()
        .position(|n| Some(*n) == name.as_str())
        .map(|i| i as u32)
}

/// A set as the two 32-bit words capset(2) takes.
fn mask(set: Option<&HashSet<Capability>>) -> u64 {
    set.into_iter()
        .flatten()
        .filter_map(number)
        .fold(0u64, |m, n| m | (1u64 << n))
}

/// The highest capability the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in the bounding set. Must run while we still hold CAP_SETPCAP.
pub fn drop_bounding(caps: &LinuxCapabilities) -> Result<()> {
    let keep = mask(caps.bounding().as_ref());
    for n in 0..=last_cap() {
        if keep & (1 << n) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) };
            if rc != 0 {
                return Err(Error::sys(
                    format!("drop capability {n} from the bounding set"),
                    nix::errno::Errno::last(),
                ));
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets effective, permitted and inheritable, then raises the ambient set.
pub fn apply(caps: &LinuxCapabilities) -> Result<()> {
    let (e, p, i) = (
        mask(caps.effective().as_ref()),
        mask(caps.permitted().as_ref()),
        mask(caps.inheritable().as_ref()),
    );
    let mut header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [
        CapData {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        CapData {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: header and data are the layout capset(2) v3 expects (one header, two data
    // words) and live across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(Error::sys(
            format!("capset effective={e:#x} permitted={p:#x} inheritable={i:#x}"),
            nix::errno::Errno::last(),
        ));
    }
    let ambient = mask(caps.ambient().as_ref());
    for n in 0..=last_cap() {
        if ambient & (1 << n) != 0 {
            // SAFETY: PR_CAP_AMBIENT_RAISE takes a capability number and touches no memory.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    libc::c_ulong::from(n),
                    0,
                    0,
                )
            };
            // The kernel only raises what is permitted and inheritable; runc warns and goes
            // on, and specs (including `runc spec`'s) rely on that.
            if rc != 0 {
                log::warn!(
                    "cannot raise ambient capability {n}: {}",
                    nix::errno::Errno::last()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_numbers_match_the_kernel() {
        assert_eq!(number(&Capability::Chown), Some(0));
        assert_eq!(number(&Capability::NetBindService), Some(10));
        assert_eq!(number(&Capability::SysAdmin), Some(21));
        assert_eq!(number(&Capability::CheckpointRestore), Some(40));
    }
}
