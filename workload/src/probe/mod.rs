//! Isolation probes: what a process in the sandbox can see of and reach in the kernel and
//! the host. Each field is a fact read from here; what it means is in docs/workload.md.

mod cgroups;
mod syscalls;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{Value, json};

/// Runs every probe. `host_pid` is a pid the caller knows to exist outside the sandbox.
pub fn probe(host_pid: Option<u32>) -> Value {
    let census = syscalls::census();
    let syslog = syslog_readable();
    let kmsg = kmsg_readable();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    json!({
        "workload": "probe",
        "kernel_release": kernel_release(),
        "hypervisor": cpu_flag("hypervisor"),
        "host_pid_visible": host_pid.map(|p| Path::new(&format!("/proc/{p}")).exists()),
        "visible_pids": visible_pids(),
        "kernel_log_readable": syslog || kmsg,
        "syslog_readable": syslog,
        "kmsg_readable": kmsg,
        "host_cgroups_visible":
            cgroups::count_foreign(&cgroups::mounts(&mountinfo, &self_cgroup)),
        "kallsyms_addresses": kallsyms_addresses(),
        "syscalls_probed": census.probed,
        "syscalls_reachable": census.reachable,
        "syscalls_enosys": census.enosys,
        "syscalls_eperm": census.eperm,
        "syscalls_sigsys": census.sigsys,
        "seccomp_mode": status_field(&status, "Seccomp").and_then(|v| v.parse::<u32>().ok()),
        "pid": std::process::id(),
    })
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&raw mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether the first CPU's `flags` line in /proc/cpuinfo lists `flag`.
fn cpu_flag(flag: &str) -> bool {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(_, flags)| flags.split_whitespace().any(|f| f == flag))
}

/// Number of numeric (process) directories in /proc.
fn visible_pids() -> u64 {
    fs::read_dir("/proc").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count() as u64
    })
}

/// syslog(SYSLOG_ACTION_READ_ALL) succeeds: needs CAP_SYSLOG (or dmesg_restrict=0) and a
/// seccomp profile that lets syslog(2) through.
fn syslog_readable() -> bool {
    const SYSLOG_ACTION_READ_ALL: libc::c_long = 3;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_syslog,
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr(),
            buf.len() as libc::c_long,
        )
    };
    rc >= 0
}

/// /dev/kmsg opens and yields a record (or says there is none yet).
fn kmsg_readable() -> bool {
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return false;
    };
    // One read returns one record; a record is at most a few KiB.
    let mut buf = vec![0u8; 16 * 1024];
    match f.read(&mut buf) {
        Ok(n) => n > 0,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// /proc/kallsyms shows real addresses (not all zeros, as kptr_restrict makes it for the
/// unprivileged). The first few thousand lines decide.
fn kallsyms_addresses() -> bool {
    let Ok(f) = fs::File::open("/proc/kallsyms") else {
        return false;
    };
    BufReader::new(f)
        .lines()
        .take(5000)
        .map_while(Result::ok)
        .any(|l| {
            l.split_whitespace()
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .is_some_and(|a| a != 0)
        })
}

/// The value of `name:` in /proc/self/status text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_found_by_exact_name() {
        let s = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(status_field(s, "Seccomp"), Some("2"));
        assert_eq!(status_field(s, "Seccomp_filters"), Some("1"));
        assert_eq!(status_field(s, "Nope"), None);
    }

    #[test]
    fn own_process_is_visible() {
        assert!(visible_pids() >= 1);
        assert!(!kernel_release().is_empty());
    }
}
