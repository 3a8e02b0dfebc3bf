//! What a comparison produces: the catalog of metrics (key, unit, meaning, which workload
//! measures it), one [`ModeResult`] per mode and the whole [`Report`]. Keys carry their unit
//! in their name and are the stable JSON schema (`docs/compare.md`).

use std::collections::BTreeMap;

use super::probe::Probe;
use super::{Mode, Workload};

/// Which half of the table a metric belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Cost,
    Isolation,
}

/// One row of the report.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// JSON key; ends with its unit.
    pub key: &'static str,
    pub unit: &'static str,
    pub label: &'static str,
    pub group: Group,
    pub lower_is_better: bool,
    pub workload: Workload,
}

const fn def(
    key: &'static str,
    unit: &'static str,
    label: &'static str,
    group: Group,
    lower_is_better: bool,
    workload: Workload,
) -> MetricDef {
    MetricDef {
        key,
        unit,
        label,
        group,
        lower_is_better,
        workload,
    }
}

use Group::{Cost, Isolation};

pub const START_P50: &str = "start_p50_ms";
pub const START_P95: &str = "start_p95_ms";
pub const TEARDOWN_P50: &str = "teardown_p50_ms";
pub const TEARDOWN_P95: &str = "teardown_p95_ms";
pub const MEMORY: &str = "memory_idle_pss_mib";
pub const SYSCALL: &str = "syscall_ns_per_call";
pub const CPU: &str = "cpu_ops_per_sec";
pub const CPU_RELATIVE: &str = "cpu_relative_to_host_ratio";
pub const FSYNC: &str = "fsync_mib_per_sec";
pub const STDOUT: &str = "stdout_mib_per_sec";
pub const LATENCY_ALONE: &str = "latency_alone_p99_us";
pub const NEIGHBOUR_FORKBOMB: &str = "neighbour_forkbomb_p99_ratio";
pub const NEIGHBOUR_MEMHOG: &str = "neighbour_memhog_p99_ratio";
pub const ATTACK_SURFACE: &str = "attack_surface_syscalls";
pub const GUEST_KERNEL_SYSCALLS: &str = "guest_kernel_syscalls";

/// Every metric, in table order.
pub const METRICS: &[MetricDef] = &[
    def(
        START_P50,
        "ms",
        "start p50 (create → first byte)",
        Cost,
        true,
        Workload::Start,
    ),
    def(START_P95, "ms", "start p95", Cost, true, Workload::Start),
    def(
        TEARDOWN_P50,
        "ms",
        "teardown p50 (exit → all gone)",
        Cost,
        true,
        Workload::Teardown,
    ),
    def(
        TEARDOWN_P95,
        "ms",
        "teardown p95",
        Cost,
        true,
        Workload::Teardown,
    ),
    def(
        MEMORY,
        "MiB",
        "host memory per idle sandbox (PSS)",
        Cost,
        true,
        Workload::Memory,
    ),
    def(
        SYSCALL,
        "ns",
        "syscall (getppid)",
        Cost,
        true,
        Workload::Syscall,
    ),
    def(
        CPU,
        "ops/s",
        "CPU-bound throughput",
        Cost,
        false,
        Workload::Cpu,
    ),
    def(
        CPU_RELATIVE,
        "ratio",
        "CPU throughput / host",
        Cost,
        false,
        Workload::Cpu,
    ),
    def(
        FSYNC,
        "MiB/s",
        "write+fsync in rootfs",
        Cost,
        false,
        Workload::Fsync,
    ),
    def(
        STDOUT,
        "MiB/s",
        "stdout to host",
        Cost,
        false,
        Workload::Stdout,
    ),
    def(
        LATENCY_ALONE,
        "µs",
        "wake-up lateness p99, alone",
        Isolation,
        true,
        Workload::Neighbour,
    ),
    def(
        NEIGHBOUR_FORKBOMB,
        "ratio",
        "p99 with fork-bomb neighbour / alone",
        Isolation,
        true,
        Workload::Neighbour,
    ),
    def(
        NEIGHBOUR_MEMHOG,
        "ratio",
        "p99 with memory-hog neighbour / alone",
        Isolation,
        true,
        Workload::Neighbour,
    ),
    def(
        ATTACK_SURFACE,
        "syscalls",
        "host syscalls reachable",
        Isolation,
        true,
        Workload::Probe,
    ),
    def(
        GUEST_KERNEL_SYSCALLS,
        "syscalls",
        "guest kernel syscalls reachable",
        Isolation,
        true,
        Workload::Probe,
    ),
];

/// The catalog entry for `key`.
pub fn metric(key: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.key == key)
}

/// One measured number and how many samples it summarises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub n: usize,
}

/// Everything measured in one mode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModeResult {
    pub values: BTreeMap<String, Sample>,
    pub probe: Option<Probe>,
    /// Workloads that failed in this mode, one line each.
    pub errors: Vec<String>,
    /// How a measurement differed from the documented one in this mode.
    pub notes: Vec<String>,
}

impl ModeResult {
    pub fn set(&mut self, key: &str, value: f64, n: usize) {
        self.values.insert(key.to_owned(), Sample { value, n });
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).map(|s| s.value)
    }
}

/// The machine the comparison ran on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostInfo {
    pub kernel_release: String,
    pub cpus: usize,
    /// `hardware`, `pvm` (cannot boot Linux; vm runs nested) or `none`.
    pub kvm: String,
}

impl HostInfo {
    pub fn detect() -> Self {
        let kvm = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            "pvm"
        } else if std::path::Path::new("/dev/kvm").exists() {
            "hardware"
        } else {
            "none"
        };
        Self {
            kernel_release: super::probe::host_kernel_release(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            kvm: kvm.to_owned(),
        }
    }
}

/// A whole comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub host: HostInfo,
    pub runs: usize,
    /// Modes whose times come from an emulated machine (the nested harness).
    pub emulated: BTreeMap<String, bool>,
    pub modes: Vec<(Mode, ModeResult)>,
    /// `shared` measured in the same nested L1 as `vm`: the fair reference for vm's numbers.
    pub nested_shared: Option<ModeResult>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn mode(&self, mode: Mode) -> Option<&ModeResult> {
        self.modes.iter().find(|(m, _)| *m == mode).map(|(_, r)| r)
    }

    /// `vm / shared` for `key`, both measured in the same nested L1 when vm ran nested,
    /// otherwise on this host.
    pub fn vm_over_shared(&self, key: &str) -> Option<f64> {
        let vm = self.mode(Mode::Vm)?.get(key)?;
        let shared = match &self.nested_shared {
            Some(r) => r.get(key)?,
            None => self.mode(Mode::Shared)?.get(key)?,
        };
        (shared > 0.0).then(|| vm / shared)
    }
}

/// Nearest-rank percentile of unsorted samples; `None` when there are none.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&s, 50.0), Some(3.0));
        assert_eq!(percentile(&s, 95.0), Some(5.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn every_key_ends_with_its_unit() {
        for m in METRICS {
            let suffix = match m.unit {
                "ms" => "_ms",
                "MiB" => "_mib",
                "ns" => "_ns_per_call",
                "ops/s" | "MiB/s" => "_per_sec",
                "ratio" => "_ratio",
                "µs" => "_us",
                "syscalls" => "_syscalls",
                other => panic!("unit {other} of {} has no suffix rule", m.key),
            };
            assert!(m.key.ends_with(suffix), "{} / {}", m.key, m.unit);
        }
    }

    #[test]
    fn vm_ratio_prefers_the_nested_shared_reference() {
        let mut vm = ModeResult::default();
        vm.set(START_P50, 40.0, 3);
        let mut shared = ModeResult::default();
        shared.set(START_P50, 2.0, 3);
        let mut nested = ModeResult::default();
        nested.set(START_P50, 20.0, 3);
        let mut r = Report {
            modes: vec![(Mode::Shared, shared), (Mode::Vm, vm)],
            ..Report::default()
        };
        assert_eq!(r.vm_over_shared(START_P50), Some(20.0));
        r.nested_shared = Some(nested);
        assert_eq!(r.vm_over_shared(START_P50), Some(2.0));
    }
}
