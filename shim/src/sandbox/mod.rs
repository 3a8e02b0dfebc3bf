//! A sandbox is what one shim serves: the isolation boundary (a microVM, or nothing but the
//! host kernel) plus the agent that builds containers behind it. The task service only sees
//! the [`Sandbox`] trait, so vm and shared isolation plug into the same shim.

pub mod host;
pub mod vm;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::Mount;
use ward_agent::client::AgentClient;
use ward_agent::protocol::agent::{FileCopy, Storage};

use crate::config::{Config, Isolation};

pub use host::HostSandbox;
pub use vm::VmSandbox;

/// How the agent gets a container's root file system.
#[derive(Debug, Clone, PartialEq)]
pub enum RootfsSource {
    /// One prepared directory the agent can reach (shared isolation: containerd's mounts,
    /// mounted by the shim at `<bundle>/rootfs`).
    Prepared(Storage),
    /// Read-only layers, top first, that the agent stacks under a private upper (vm
    /// isolation: each layer an image on a drive).
    Layers(Vec<Storage>),
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox {id}: cannot boot a VM: {why}")]
    Boot { id: String, why: String },
    #[error("sandbox {id}: starting {binary}: {source}")]
    SpawnVmm {
        id: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "sandbox {id}: the VM's agent did not answer on vsock within {waited:?}: {why}\nlast guest console lines:\n{console}"
    )]
    VmBoot {
        id: String,
        waited: std::time::Duration,
        why: String,
        console: String,
    },
    #[error("sandbox {id}: spec of container {container}: {why}")]
    Spec {
        id: String,
        container: String,
        why: String,
    },
    #[error("sandbox {id}: creating {path}: {source}")]
    StateDir {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox {id}: starting agent {binary}: {source}")]
    SpawnAgent {
        id: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox {id}: agent did not come up: {source}")]
    Connect {
        id: String,
        source: ward_agent::client::ClientError,
    },
    #[error("sandbox {id}: rootfs of container {container}: {why}")]
    Rootfs {
        id: String,
        container: String,
        why: String,
    },
}

/// One isolation boundary and its agent, shared by every container of a pod.
#[async_trait]
pub trait Sandbox: Send + Sync + Debug {
    /// The sandbox id (the pod's sandbox id, or the id of the one container `ctr run` made).
    fn id(&self) -> &str;

    fn isolation(&self) -> Isolation;

    /// The agent serving this sandbox; every container operation is one of its RPCs.
    fn agent(&self) -> &AgentClient;

    /// `false` once the agent (or the VM carrying it) has died.
    fn alive(&self) -> bool;

    /// The host processes the sandbox itself runs (the agent, or the VMM), not counting
    /// container processes.
    fn host_pids(&self) -> Vec<u32>;

    /// Adapts a container's OCI spec to where the agent runs, and names files to copy there
    /// first. The host agent takes the spec as it is.
    async fn prepare_spec(
        &self,
        _container: &str,
        spec_json: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<FileCopy>), SandboxError> {
        Ok((spec_json, Vec::new()))
    }

    /// Makes containerd's rootfs `mounts` for `container` reachable by the agent.
    async fn prepare_rootfs(
        &self,
        container: &str,
        bundle: &Path,
        mounts: &[Mount],
    ) -> Result<RootfsSource, SandboxError>;

    /// Undoes [`Sandbox::prepare_rootfs`]; safe to call twice.
    async fn release_rootfs(&self, container: &str, bundle: &Path) -> Result<(), SandboxError>;

    /// Stops the agent (and the VM) and removes the sandbox's host state.
    async fn shutdown(&self);
}

/// Starts the sandbox `id` with the given isolation, with default VM sizing.
pub async fn start(
    config: &Config,
    isolation: Isolation,
    id: &str,
) -> Result<Arc<dyn Sandbox>, SandboxError> {
    start_for(config, isolation, id, b"{}").await
}

/// Starts the sandbox `id` for a first container with spec `spec_json` (a VM is sized for
/// its limits).
pub async fn start_for(
    config: &Config,
    isolation: Isolation,
    id: &str,
    spec_json: &[u8],
) -> Result<Arc<dyn Sandbox>, SandboxError> {
    match isolation {
        Isolation::Shared => Ok(Arc::new(HostSandbox::start(config, id).await?)),
        Isolation::Vm => Ok(Arc::new(VmSandbox::start(config, id, spec_json).await?)),
    }
}

/// The sandbox's directory under the run dir: its sockets, pid files and state.
pub fn sandbox_dir(config: &Config, id: &str) -> PathBuf {
    config.run_dir.join(id)
}

/// Cleans up what a dead shim left of the sandbox whose state is in `dir` (agent or VMM
/// process, cgroups, sockets, state) for `shim delete`; every isolation keeps its leftovers
/// there.
pub fn cleanup_after_crash(dir: &Path) {
    vm::cleanup_after_crash(dir);
    host::cleanup_after_crash(dir);
}

/// Sends `signal` to `pid` (0 is never signalled: that would be our process group).
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) has no memory effects; a stale pid is at worst ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}
