//! The normalized usage figures both cgroup versions report.

use serde::{Deserialize, Serialize};

/// Usage of one container's cgroup. Fields a kernel does not report stay 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Total CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// User and system CPU time, nanoseconds.
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// Periods throttled by the CFS quota, and time spent throttled (ns).
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    /// Memory in use now, its high-water mark (0 where the kernel has none) and the limit
    /// (`u64::MAX` when unlimited).
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    pub memory_limit: u64,
    /// Page cache charged to the cgroup.
    pub memory_cache: u64,
    /// Processes now, and the limit (`u64::MAX` when unlimited).
    pub pids_current: u64,
    pub pids_limit: u64,
    /// Block I/O bytes and operations, summed over devices.
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub io_read_ops: u64,
    pub io_write_ops: u64,
    /// OOM kills in the cgroup.
    pub oom_kills: u64,
}
