//! What the agent reports about the kernel it runs on.

use crate::protocol::agent::GuestInfoResponse;

/// 2 when /sys/fs/cgroup is the unified hierarchy, 1 otherwise.
pub fn cgroup_version() -> u32 {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => 2,
        _ => 1,
    }
}

pub fn guest_info(in_guest: bool) -> GuestInfoResponse {
    let mut r = GuestInfoResponse::new();
    r.kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    r.memory_total_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    r.cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    r.cgroup_version = cgroup_version();
    r.in_guest = in_guest;
    r
}
