//! Shared isolation: `ward-agent` runs on the host as a child of the shim, listening on
//! `<run_dir>/<sandbox>/agent.sock`, and builds containers on the host kernel. The agent is
//! bound to the shim's life (PR_SET_PDEATHSIG): a shim killed with SIGKILL takes its
//! containers down with it, and `shim delete` only has to sweep what is left.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_shim_protos::api::Mount;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use ward_agent::client::{AgentClient, AgentEndpoint};
use ward_agent::protocol::agent::{ShutdownRequest, Storage};

use super::{RootfsSource, Sandbox, SandboxError};
use crate::config::{Config, Isolation};
use crate::rootfs;

/// How long a starting agent has to answer.
const AGENT_START: Duration = Duration::from_secs(10);
/// How long Shutdown (which removes every container) may take before the agent is killed.
const AGENT_STOP: Duration = Duration::from_secs(15);

/// A sandbox whose agent runs on the host.
#[derive(Debug)]
pub struct HostSandbox {
    id: String,
    dir: PathBuf,
    agent: AgentClient,
    pid: u32,
    alive: Arc<AtomicBool>,
    exited: watch::Receiver<bool>,
}

pub use super::sandbox_dir;

impl HostSandbox {
    /// Spawns the agent for sandbox `id` and waits until it answers.
    pub async fn start(config: &Config, id: &str) -> Result<Self, SandboxError> {
        let dir = sandbox_dir(config, id);
        let state_err = |path: &Path, source| SandboxError::StateDir {
            id: id.to_owned(),
            path: path.to_owned(),
            source,
        };
        // A dead shim's leftovers under the same id would make the agent's bind fail.
        if dir.exists() {
            cleanup_after_crash(&dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| state_err(&dir, e))?;
        let socket = dir.join("agent.sock");
        let binary = config.agent_binary();
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // The agent dies (SIGTERM: it removes its containers) with the shim thread
                // that spawned it; the shim runs a current-thread runtime, so that is the shim.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| SandboxError::SpawnAgent {
            id: id.to_owned(),
            binary: binary.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let pid_file = dir.join("agent.pid");
        std::fs::write(&pid_file, pid.to_string()).map_err(|e| state_err(&pid_file, e))?;

        // The agent's log lines go to containerd's log through ours.
        for (name, pipe) in [
            ("stdout", child.stdout.take().map(|p| Box::new(p) as Box<_>)),
            ("stderr", child.stderr.take().map(|p| Box::new(p) as Box<_>)),
        ] {
            if let Some(pipe) = pipe {
                forward_log(id.to_owned(), name, pipe);
            }
        }

        let alive = Arc::new(AtomicBool::new(true));
        let (exited_tx, exited) = watch::channel(false);
        {
            let alive = alive.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let status = child.wait().await;
                alive.store(false, Ordering::SeqCst);
                log::info!("sandbox {id}: agent (pid {pid}) exited: {status:?}");
                let _ = exited_tx.send(true);
            });
        }

        let agent = match AgentClient::connect(AgentEndpoint::Unix(socket), AGENT_START).await {
            Ok(agent) => agent,
            Err(source) => {
                kill(pid, libc::SIGKILL);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(SandboxError::Connect {
                    id: id.to_owned(),
                    source,
                });
            }
        };
        log::info!("sandbox {id}: agent pid {pid} serving in {}", dir.display());
        Ok(Self {
            id: id.to_owned(),
            dir,
            agent,
            pid,
            alive,
            exited,
        })
    }

    pub fn agent_pid(&self) -> u32 {
        self.pid
    }
}

type LogPipe = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

fn forward_log(id: String, name: &'static str, pipe: LogPipe) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log::info!("sandbox {id}: agent {name}: {line}");
        }
    });
}

use super::signal as kill;

#[async_trait]
impl Sandbox for HostSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn isolation(&self) -> Isolation {
        Isolation::Shared
    }

    fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn host_pids(&self) -> Vec<u32> {
        vec![self.pid]
    }

    async fn prepare_rootfs(
        &self,
        container: &str,
        bundle: &Path,
        mounts: &[Mount],
    ) -> Result<RootfsSource, SandboxError> {
        let dir = rootfs::mount(bundle, mounts)
            .await
            .map_err(|e| SandboxError::Rootfs {
                id: self.id.clone(),
                container: container.to_owned(),
                why: e.to_string(),
            })?;
        let mut storage = Storage::new();
        storage.source = dir.display().to_string();
        Ok(RootfsSource::Prepared(storage))
    }

    async fn release_rootfs(&self, container: &str, bundle: &Path) -> Result<(), SandboxError> {
        rootfs::unmount(bundle).map_err(|e| SandboxError::Rootfs {
            id: self.id.clone(),
            container: container.to_owned(),
            why: e.to_string(),
        })
    }

    async fn shutdown(&self) {
        if self.alive() {
            let mut ctx = self.agent.ctx();
            ctx.timeout_nano = AGENT_STOP.as_nanos() as i64;
            // Shutdown returns once every container is removed. The agent then waits for
            // its ttrpc connections to drain, which our blocked GetOOMEvent call never does:
            // nothing is left to lose, so it is killed rather than waited for.
            let signal = match self
                .agent
                .rpc()
                .shutdown(ctx, &ShutdownRequest::new())
                .await
            {
                Ok(_) => libc::SIGKILL,
                Err(e) => {
                    log::warn!("sandbox {}: agent Shutdown: {e}", self.id);
                    libc::SIGTERM
                }
            };
            kill(self.pid, signal);
            let mut exited = self.exited.clone();
            if tokio::time::timeout(AGENT_STOP, exited.wait_for(|e| *e))
                .await
                .is_err()
            {
                log::warn!("sandbox {}: agent did not exit, killing it", self.id);
                kill(self.pid, libc::SIGKILL);
                let _ = tokio::time::timeout(AGENT_STOP, exited.wait_for(|e| *e)).await;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("sandbox {}: removing {}: {e}", self.id, self.dir.display());
            }
        }
    }
}

/// `true` when `pid` is a live ward-agent serving `dir`.
fn is_our_agent(pid: u32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
        let cmdline = String::from_utf8_lossy(&raw);
        cmdline.contains("ward-agent") && cmdline.contains(&*dir.to_string_lossy())
    })
}

/// Stops a dead shim's agent (SIGTERM removes its containers; SIGKILL after a grace) and
/// removes the sandbox directory.
pub fn cleanup_after_crash(dir: &Path) {
    let pid: u32 = std::fs::read_to_string(dir.join("agent.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if pid != 0 && is_our_agent(pid, dir) {
        kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + AGENT_STOP;
        while is_our_agent(pid, dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_our_agent(pid, dir) {
            kill(pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
