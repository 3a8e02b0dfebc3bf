//! vm isolation: each sandbox is a `ward-vmm` microVM whose init is `ward-agent`, reached
//! over hybrid vsock. Image layers become read-only drive images the agent stacks with
//! overlayfs inside the guest; small bind-mounted files are copied in. The VM is bound to
//! the shim's life, and `shim delete` sweeps what a dead shim left (see docs/vm-isolation.md).

mod boot;
mod layers;
mod spec;
mod vmm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_shim_protos::api::Mount;
use tokio::sync::Mutex;
use ward_agent::client::{AgentClient, AgentEndpoint};
use ward_agent::protocol::agent::{FileCopy, ShutdownRequest, Storage};
use ward_rootfs::layer::{LayerSpec, build as build_layer};

pub use boot::{BootError, Sizing, guest_initrd, guest_kernel, sizing};
use layers::{DriveSlots, Placement};
use vmm::Vmm;
pub use vmm::VmmExit;

use super::{RootfsSource, Sandbox, SandboxError};
use crate::config::{Config, Isolation};

/// How long Shutdown (which removes every container and powers the guest off) may take
/// before the VM is killed.
const VM_STOP: Duration = Duration::from_secs(15);

/// A sandbox whose agent runs in a microVM.
#[derive(Debug)]
pub struct VmSandbox {
    id: String,
    dir: PathBuf,
    agent: AgentClient,
    vmm: Vmm,
    cache_dir: Option<PathBuf>,
    slots: Mutex<DriveSlots>,
}

impl VmSandbox {
    /// Boots the VM for sandbox `id`, sized for its first container's spec, and waits until
    /// the agent in it answers.
    pub async fn start(config: &Config, id: &str, spec_json: &[u8]) -> Result<Self, SandboxError> {
        let dir = super::sandbox_dir(config, id);
        let state_err = |path: &Path, source| SandboxError::StateDir {
            id: id.to_owned(),
            path: path.to_owned(),
            source,
        };
        if dir.exists() {
            super::cleanup_after_crash(&dir);
        }
        let boot = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || boot::boot_files(&config))
                .await
                .map_err(|e| SandboxError::Boot {
                    id: id.to_owned(),
                    why: e.to_string(),
                })?
                .map_err(|e| SandboxError::Boot {
                    id: id.to_owned(),
                    why: e.to_string(),
                })?
        };
        std::fs::create_dir_all(&dir).map_err(|e| state_err(&dir, e))?;
        let size = sizing(config, spec_json);
        let slots = config.vm.drive_slots.min(16);
        let started = Instant::now();
        // A guest that resets before its agent answers is booted once more: under nested
        // KVM (ward's own CI) a guest now and then resets early, its agent already running,
        // without a word on its console; a broken setup fails twice, and the second error is
        // the one reported.
        let mut attempt = 1;
        let (vmm, agent) = loop {
            match boot_vm(config, id, &dir, &boot, size, slots).await {
                Ok(booted) => break booted,
                Err(BootFailure::Reset(e)) if attempt == 1 => {
                    log::warn!("sandbox {id}: {e}; booting the VM once more");
                    attempt += 1;
                }
                Err(BootFailure::Reset(e) | BootFailure::Other(e)) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        };
        log::info!(
            "sandbox {id}: agent answered over vsock {} ms after the first VMM start",
            started.elapsed().as_millis()
        );
        Ok(Self {
            id: id.to_owned(),
            dir,
            agent,
            vmm,
            cache_dir: config.vm.cache_dir.clone(),
            slots: Mutex::new(DriveSlots::new(usize::from(slots))),
        })
    }

    /// The VMM's host pid.
    pub fn vmm_pid(&self) -> u32 {
        self.vmm.pid
    }

    fn rootfs_err(&self, container: &str, why: impl std::fmt::Display) -> SandboxError {
        SandboxError::Rootfs {
            id: self.id.clone(),
            container: container.to_owned(),
            why: why.to_string(),
        }
    }

    /// Builds (or finds in the cache) the image of layer `dir` and makes sure it is on a
    /// drive of this VM; returns what the agent needs to find it.
    async fn attach_layer(&self, container: &str, dir: PathBuf) -> Result<Storage, SandboxError> {
        let spec = LayerSpec {
            source: dir.clone(),
            fs: None,
            cache_dir: self.cache_dir.clone(),
        };
        let image = tokio::task::spawn_blocking(move || build_layer(&spec))
            .await
            .map_err(|e| self.rootfs_err(container, e))?
            .map_err(|e| self.rootfs_err(container, format!("layer {}: {e}", dir.display())))?;
        let serial = layers::serial_of(&image.key);
        let mut slots = self.slots.lock().await;
        match slots.place(&image.key) {
            Some(Placement::Attached(_)) => {}
            Some(Placement::Free(slot)) => {
                self.vmm
                    .attach(slot, &image.path, &serial)
                    .await
                    .map_err(|e| self.rootfs_err(container, e))?;
                slots.commit(slot, &image.key);
                log::info!(
                    "sandbox {}: layer {} as {} on drive slot {slot}",
                    self.id,
                    dir.display(),
                    image.path.display()
                );
            }
            None => {
                return Err(self.rootfs_err(
                    container,
                    format!(
                        "all {} drive slots of the VM hold other layers (each distinct image layer takes one; raise drive_slots in the [vm] table of the ward config)",
                        slots.capacity()
                    ),
                ));
            }
        }
        let mut storage = Storage::new();
        storage.device_serial = serial;
        image.fs.name().clone_into(&mut storage.fstype);
        storage.options = vec!["ro".to_owned()];
        Ok(storage)
    }
}

/// Why a VM did not come up.
enum BootFailure {
    /// The VMM ended (the guest reset or died) before the agent answered.
    Reset(SandboxError),
    Other(SandboxError),
}

/// Starts ward-vmm in `dir` and waits until the agent answers on vsock; on failure the VMM
/// is gone and its cgroups removed (the directory stays for the caller).
async fn boot_vm(
    config: &Config,
    id: &str,
    dir: &Path,
    boot: &boot::BootFiles,
    size: Sizing,
    slots: u8,
) -> Result<(Vmm, AgentClient), BootFailure> {
    let vmm = Vmm::spawn(id, dir, boot, size, slots, &config.vm.kernel_args).map_err(|source| {
        BootFailure::Other(SandboxError::SpawnVmm {
            id: id.to_owned(),
            binary: boot.vmm.clone(),
            source,
        })
    })?;
    log::info!(
        "sandbox {id}: ward-vmm pid {} booting {} ({} vCPU, {} MiB)",
        vmm.pid,
        boot.kernel.display(),
        size.vcpus,
        size.mem_mib
    );
    let wait = Duration::from_secs(config.vm.boot_timeout_secs.max(1));
    let started = Instant::now();
    let endpoint = AgentEndpoint::HybridVsock {
        uds: vmm.vsock_uds.clone(),
    };
    let connected = tokio::select! {
        r = AgentClient::connect(endpoint, wait) => r.map_err(|e| (false, e.to_string())),
        how = vmm.wait() => Err((true, format!("ward-vmm {how} before the agent answered"))),
    };
    match connected {
        Ok(agent) => Ok((vmm, agent)),
        Err((reset, why)) => {
            vmm.kill();
            vmm.wait().await;
            vmm.remove_cgroups();
            let e = SandboxError::VmBoot {
                id: id.to_owned(),
                waited: started.elapsed(),
                why,
                console: vmm.final_console_tail().await,
            };
            Err(if reset {
                BootFailure::Reset(e)
            } else {
                BootFailure::Other(e)
            })
        }
    }
}

#[async_trait]
impl Sandbox for VmSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn alive(&self) -> bool {
        self.vmm.exited().is_none()
    }

    fn host_pids(&self) -> Vec<u32> {
        vec![self.vmm.pid]
    }

    async fn prepare_spec(
        &self,
        container: &str,
        spec_json: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<FileCopy>), SandboxError> {
        spec::for_guest(container, &spec_json).map_err(|e| SandboxError::Spec {
            id: self.id.clone(),
            container: container.to_owned(),
            why: e.to_string(),
        })
    }

    async fn prepare_rootfs(
        &self,
        container: &str,
        bundle: &Path,
        mounts: &[Mount],
    ) -> Result<RootfsSource, SandboxError> {
        let dirs = layers::layer_dirs(bundle, mounts).map_err(|e| self.rootfs_err(container, e))?;
        let mut storages = Vec::with_capacity(dirs.len());
        for dir in dirs {
            storages.push(self.attach_layer(container, dir).await?);
        }
        Ok(RootfsSource::Layers(storages))
    }

    /// Layer drives stay attached (and mounted in the guest) for the sandbox's life: the
    /// next container of the pod most likely uses the same image.
    async fn release_rootfs(&self, _container: &str, _bundle: &Path) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn shutdown(&self) {
        if self.alive() {
            let mut ctx = self.agent.ctx();
            ctx.timeout_nano = VM_STOP.as_nanos() as i64;
            // Shutdown removes every container, syncs and powers the guest off.
            if let Err(e) = self
                .agent
                .rpc()
                .shutdown(ctx, &ShutdownRequest::new())
                .await
            {
                log::warn!("sandbox {}: agent Shutdown: {e}", self.id);
            }
            if tokio::time::timeout(VM_STOP, self.vmm.wait())
                .await
                .is_err()
            {
                log::warn!("sandbox {}: the VM did not power off, killing it", self.id);
            }
            self.vmm.kill();
            self.vmm.wait().await;
        }
        self.vmm.remove_cgroups();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("sandbox {}: removing {}: {e}", self.id, self.dir.display());
            }
        }
    }
}

/// Kills a dead shim's VM (its containers go with it) and removes its cgroups; the caller
/// removes the directory.
pub fn cleanup_after_crash(dir: &Path) {
    super::stop_leftover(dir, "vmm.pid", "ward-vmm", libc::SIGKILL, VM_STOP);
    if let Some(id) = dir.file_name() {
        vmm::sweep_cgroups(&id.to_string_lossy());
    }
}
