//! Counters the VMM keeps while it runs, served by `GET /metrics` and `GET /vm`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Shared by vCPU threads, devices and the API.
#[derive(Debug, Default)]
pub struct Metrics {
    /// KVM_RUN returns with an exit reason.
    pub exits: AtomicU64,
    pub pio_exits: AtomicU64,
    pub mmio_exits: AtomicU64,
    /// Bytes the guest wrote to its serial console.
    pub serial_bytes: AtomicU64,
    /// Microseconds from VMM start to the first KVM_RUN (0 until then).
    pub first_run_us: AtomicU64,
    /// Microseconds from VMM start to the guest's boot-port write (0 until then).
    pub guest_ready_us: AtomicU64,
    /// The VMM's own RSS (guest memory excluded) just before the first KVM_RUN, in KiB.
    pub vmm_rss_before_run_kib: AtomicU64,
    /// Host addresses where guest memory regions are mapped, so RSS can be split into
    /// guest memory and the VMM's own.
    pub guest_mappings: std::sync::Mutex<Vec<u64>>,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub exits: u64,
    pub pio_exits: u64,
    pub mmio_exits: u64,
    pub serial_bytes: u64,
    pub first_run_us: u64,
    pub guest_ready_us: u64,
    /// Resident memory of the whole process.
    pub rss_kib: u64,
    /// Resident guest memory (pages the guest or the loader touched).
    pub guest_rss_kib: u64,
    /// `rss_kib - guest_rss_kib`: what the VMM itself costs.
    pub vmm_rss_kib: u64,
    pub vmm_rss_before_run_kib: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            exits: get(&self.exits),
            pio_exits: get(&self.pio_exits),
            mmio_exits: get(&self.mmio_exits),
            serial_bytes: get(&self.serial_bytes),
            first_run_us: get(&self.first_run_us),
            guest_ready_us: get(&self.guest_ready_us),
            rss_kib: 0,
            guest_rss_kib: 0,
            vmm_rss_kib: 0,
            vmm_rss_before_run_kib: get(&self.vmm_rss_before_run_kib),
        }
        .with_rss(self)
    }

    /// (process RSS, guest memory RSS) in KiB, from /proc/self/smaps.
    pub fn rss_split(&self) -> (u64, u64) {
        let guest = self.guest_mappings.lock().expect("metrics lock").clone();
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return (rss_kib(), 0);
        };
        let (mut total, mut in_guest, mut current_is_guest) = (0, 0, false);
        for line in smaps.lines() {
            if let Some(kib) = line
                .strip_prefix("Rss:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                total += kib;
                if current_is_guest {
                    in_guest += kib;
                }
            } else if let Some((range, _)) = line.split_once(' ') {
                // A mapping header: "start-end perms offset dev inode path".
                if let Some((start, _)) = range.split_once('-') {
                    if let Ok(start) = u64::from_str_radix(start, 16) {
                        current_is_guest = guest.contains(&start);
                    }
                }
            }
        }
        (total, in_guest)
    }
}

impl MetricsSnapshot {
    fn with_rss(mut self, metrics: &Metrics) -> Self {
        let (total, guest) = metrics.rss_split();
        self.rss_kib = total;
        self.guest_rss_kib = guest;
        self.vmm_rss_kib = total.saturating_sub(guest);
        self
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the VMM process; `main` calls it first thing.
pub fn mark_process_start() {
    START.get_or_init(Instant::now);
}

/// Microseconds since [`mark_process_start`].
pub fn since_start_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The VMM's resident set size (VmRSS), in KiB; 0 when /proc says nothing.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
