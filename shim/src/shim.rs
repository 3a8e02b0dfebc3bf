//! The shim binary's lifecycle for containerd: `start` (spawn or join the sandbox's shim
//! server), `delete` (clean up after a shim that died) and the server itself.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, Shim, spawn};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config as ShimConfig, Flags, StartOpts};

use crate::options;
use crate::rootfs;
use crate::sandbox;
use crate::task::TaskService;
use crate::task::service::sandbox_dir_of_bundle;

/// Exit status reported for a task whose shim died under it (the agent was SIGTERMed with
/// it, its processes killed).
const DEAD_SHIM_EXIT: u32 = 128 + libc::SIGKILL as u32;

/// `containerd-shim-ward-v2`.
pub struct WardShim {
    id: String,
    namespace: String,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for WardShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WardShim")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Shim for WardShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, config: &mut ShimConfig) -> Self {
        // The shim waits for its own children (the agent) through tokio; a reaper calling
        // waitpid(-1) would steal their statuses.
        config.no_reaper = true;
        config.no_sub_reaper = true;
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // Containers of a pod join the shim of its sandbox: same grouping, same socket.
        let spec = std::fs::read("config.json").unwrap_or_default();
        let grouping = options::annotations(&spec)
            .get(options::CRI_SANDBOX_ID)
            .cloned()
            .unwrap_or_else(|| opts.id.clone());
        let address = spawn(opts, &grouping, Vec::new()).await?;
        containerd_shim::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().unwrap_or_default();
        if let Some(dir) = sandbox_dir_of_bundle(&bundle) {
            sandbox::cleanup_after_crash(&dir);
        }
        // The agent removes its containers when the shim dies; if it died too (SIGKILL),
        // what it left is swept here.
        let spec = std::fs::read(bundle.join("config.json")).unwrap_or_default();
        let left = crate::cgroups::kill_and_remove(&crate::cgroups::path_of(&spec, &self.id));
        if !left.is_empty() {
            log::warn!("shim delete {}: cgroups left: {left:?}", self.id);
        }
        if let Err(e) = rootfs::unmount(&bundle) {
            log::warn!("shim delete {}: {e}", self.id);
        }
        let _ = std::fs::remove_file(Path::new(&bundle).join(crate::task::service::SANDBOX_FILE));
        let mut resp = DeleteResponse::new();
        resp.exit_status = DEAD_SHIM_EXIT;
        resp.exited_at = Some(containerd_shim::util::timestamp()?).into();
        Ok(resp)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(&self.id, &self.namespace, publisher, self.exit.clone())
    }
}
