//! The isolation answers: what `ward-workload probe` saw from inside a container, plus the
//! attack surface a container process has on the host kernel. In the shared-kernel modes
//! that is every system call the probe could reach; in vm mode a guest that owns its kernel
//! reaches the host only through ward-vmm, whose seccomp allow-list bounds it.

use serde::{Deserialize, Serialize};

/// One line of `ward-workload probe` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub kernel_release: String,
    pub hypervisor: bool,
    pub host_pid_visible: Option<bool>,
    pub visible_pids: u64,
    pub kernel_log_readable: bool,
    pub host_cgroups_visible: u64,
    pub kallsyms_addresses: bool,
    pub syscalls_probed: u64,
    pub syscalls_reachable: u64,
    pub seccomp_mode: serde_json::Value,
}

impl Probe {
    /// Parses the probe's JSON line.
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim())
    }
}

/// Host system calls a process in the container can reach: the host kernel's whole
/// reachable set when it shares the host kernel, ward-vmm's seccomp allow-list when a
/// guest kernel sits in between.
pub fn attack_surface(shares_host_kernel: bool, probe: &Probe) -> u64 {
    if shares_host_kernel {
        probe.syscalls_reachable
    } else {
        ward_vmm::seccomp::allowed_syscalls().len() as u64
    }
}

/// This host's kernel release (`uname -r`).
pub fn host_kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"workload":"probe","kernel_release":"6.18.0","hypervisor":false,"host_pid_visible":false,"visible_pids":1,"kernel_log_readable":false,"host_cgroups_visible":0,"kallsyms_addresses":false,"syscalls_probed":400,"syscalls_reachable":330,"seccomp_mode":0}"#;

    #[test]
    fn a_probe_line_parses() {
        let p = Probe::parse(LINE).unwrap();
        assert_eq!(p.kernel_release, "6.18.0");
        assert_eq!(p.host_pid_visible, Some(false));
        assert_eq!(attack_surface(true, &p), 330);
    }

    #[test]
    fn vm_attack_surface_is_the_vmm_allow_list() {
        let p = Probe::parse(LINE).unwrap();
        let n = attack_surface(false, &p);
        assert!(n > 20 && n < 150, "{n}");
    }
}
