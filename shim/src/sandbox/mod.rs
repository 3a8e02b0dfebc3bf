//! A sandbox is what one shim serves: the isolation boundary (a microVM, or nothing but the
//! host kernel) plus the agent that builds containers behind it. The task service only sees
//! the [`Sandbox`] trait, so vm and shared isolation plug into the same shim.

pub mod host;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::Mount;
use ward_agent::client::AgentClient;
use ward_agent::protocol::agent::Storage;

use crate::config::{Config, Isolation};

pub use host::HostSandbox;

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
    #[error(
        "sandbox {id}: isolation \"vm\" is not available in this version of ward; use isolation = \"shared\" in the config or the annotation io.ward.isolation=shared"
    )]
    VmNotAvailable { id: String },
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

/// Starts the sandbox `id` with the given isolation.
pub async fn start(
    config: &Config,
    isolation: Isolation,
    id: &str,
) -> Result<Arc<dyn Sandbox>, SandboxError> {
    match isolation {
        Isolation::Shared => Ok(Arc::new(HostSandbox::start(config, id).await?)),
        Isolation::Vm => Err(SandboxError::VmNotAvailable { id: id.to_owned() }),
    }
}

/// Cleans up what a dead shim left of the sandbox whose state is in `dir` (agent process,
/// sockets, state) for `shim delete`; every isolation keeps its leftovers there.
pub fn cleanup_after_crash(dir: &Path) {
    host::cleanup_after_crash(dir);
}
