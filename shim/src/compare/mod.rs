//! `ward compare`: runs the `ward-workload` benchmarks in every isolation mode (ward's
//! `shared` and `vm`, runc and crun as shared-kernel baselines, and the bare host for the
//! relative CPU number) and reports cost and isolation side by side. See `docs/compare.md`.

pub mod cli;
pub mod measure;
pub mod metrics;
pub mod nested;
pub mod probe;
pub mod procs;
pub mod progress;
pub mod report;
pub mod rootfs;
pub mod runner;
pub mod session;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use metrics::{ModeResult, Report};

/// Where a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// ward, agent on the host kernel.
    Shared,
    /// ward, a microVM per sandbox.
    Vm,
    /// `runc run` on a bundle of the demo image.
    Runc,
    /// `crun run` on the same bundle.
    Crun,
    /// The workload binary run directly on the host (the CPU reference).
    Host,
}

impl Mode {
    pub const ALL: [Mode; 5] = [Mode::Shared, Mode::Vm, Mode::Runc, Mode::Crun, Mode::Host];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Vm => "vm",
            Mode::Runc => "runc",
            Mode::Crun => "crun",
            Mode::Host => "host",
        }
    }

    /// Modes that run containers on the host kernel.
    pub fn shares_host_kernel(self) -> bool {
        self != Mode::Vm
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = CompareError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| CompareError::BadValue {
                what: "mode",
                value: s.to_owned(),
                valid: Mode::ALL.map(Mode::name).join(", "),
            })
    }
}

/// One measurement `ward compare` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    Start,
    Teardown,
    Memory,
    Syscall,
    Cpu,
    Fsync,
    Stdout,
    Probe,
    Neighbour,
}

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::Start,
        Workload::Teardown,
        Workload::Memory,
        Workload::Syscall,
        Workload::Cpu,
        Workload::Fsync,
        Workload::Stdout,
        Workload::Probe,
        Workload::Neighbour,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Start => "start",
            Workload::Teardown => "teardown",
            Workload::Memory => "memory",
            Workload::Syscall => "syscall",
            Workload::Cpu => "cpu",
            Workload::Fsync => "fsync",
            Workload::Stdout => "stdout",
            Workload::Probe => "probe",
            Workload::Neighbour => "neighbour",
        }
    }
}

impl FromStr for Workload {
    type Err = CompareError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| CompareError::BadValue {
                what: "workload",
                value: s.to_owned(),
                valid: Workload::ALL.map(Workload::name).join(", "),
            })
    }
}

/// Output format of the report on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// What to measure, where, and how to print it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Samples per latency metric (start, teardown); throughput metrics take `min(runs, 3)`.
    pub runs: usize,
    pub workloads: Vec<Workload>,
    pub format: Format,
    pub svg: Option<PathBuf>,
    /// ward modes and baselines to run, in report order (`host` is added when `cpu` needs it).
    pub modes: Vec<Mode>,
    /// The image archive ward's modes run (default: the demo image built with the workload).
    pub image: Option<PathBuf>,
    /// The ward config file (default: `/etc/ward/config.toml`, or the built-in defaults).
    pub config: Option<PathBuf>,
}

impl Options {
    pub fn wants(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("unknown {what} {value:?}; valid: {valid}")]
    BadValue {
        what: &'static str,
        value: String,
        valid: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{mode}: {what}")]
    Launch { mode: Mode, what: String },
    #[error("{mode}: workload {workload} printed {output:?}, not the expected {expected}")]
    WorkloadOutput {
        mode: Mode,
        workload: String,
        output: String,
        expected: &'static str,
    },
    #[error("demo image rootfs: {0}")]
    Rootfs(String),
    #[error("ward config: {0}")]
    Config(String),
    #[error("nested harness: {0}")]
    Nested(String),
}

impl CompareError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CompareError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn launch(mode: Mode, what: impl Into<String>) -> Self {
        CompareError::Launch {
            mode,
            what: what.into(),
        }
    }
}
