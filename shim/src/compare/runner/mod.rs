//! One way of starting a workload per [`Mode`]: each runner turns "run these arguments of
//! `ward-workload` with these limits" into a running [`Instance`] whose host processes,
//! output, exit and teardown the metrics code can observe the same way in every mode.

pub mod host;
pub mod oci;
pub mod ward;

use std::io::Read;
use std::time::Duration;

use super::{CompareError, Mode};

pub use ward_rootfs::demo::WORKLOAD_IN_IMAGE;

/// Resource limits for a sandbox (the neighbour that misbehaves).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub pids: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// One workload to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Unique among the instances alive at once.
    pub id: String,
    /// Arguments of `ward-workload` (the subcommand first).
    pub args: Vec<String>,
    pub limits: Limits,
}

impl LaunchSpec {
    pub fn new(id: impl Into<String>, args: &[&str]) -> Self {
        Self {
            id: id.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            limits: Limits::default(),
        }
    }

    /// The full command line inside the container.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(WORKLOAD_IN_IMAGE.to_owned())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// Starts workloads in one mode.
pub trait Runtime: std::fmt::Debug {
    fn mode(&self) -> Mode;

    /// Whether [`Limits::pids`] is enforced; a fork bomb only runs where it is.
    fn supports_pids_limit(&self) -> bool {
        true
    }

    /// Creates and starts the container (sandbox included) and returns once it runs; the
    /// caller times this call up to the first byte on [`Instance::stdout`].
    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, CompareError>;
}

/// A started workload.
pub trait Instance: Send {
    /// The host processes this sandbox costs: agent or VMM, runtime processes left running,
    /// and the container's processes (roots; their descendants are counted too).
    fn host_pids(&self) -> Vec<u32>;

    /// The container's stdout; `None` after the first call.
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>>;

    /// The container's stderr; `None` after the first call.
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>>;

    /// SIGKILLs the container's process.
    fn kill(&mut self) -> Result<(), CompareError>;

    /// Waits up to `limit` until the container's process has exited; its exit code when
    /// the runtime reports one.
    fn wait(&mut self, limit: Duration) -> Result<Option<i32>, CompareError>;

    /// Removes everything the container and its sandbox left on the host; returns when it
    /// is all gone.
    fn teardown(self: Box<Self>) -> Result<(), CompareError>;
}
