//! The AgentService RPCs, on top of the container library. Library calls that fork, mount or
//! wait on the kernel run on tokio's blocking pool; every error keeps its ttrpc code.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use tokio::sync::{Notify, broadcast};
use ttrpc::r#async::TtrpcContext;

use super::process::{Ends, Proc};
use super::registry::{Entry, Registry, RpcError};
use crate::container::{Container, CreateOptions, Rootfs, Stdio};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::agent::{
    ContainerRequest, CopyFileRequest, CreateContainerRequest, CreateContainerResponse,
    CreateSandboxRequest, DestroySandboxRequest, Empty, ExecProcessRequest, ExecProcessResponse,
    FileCopy, GetOOMEventRequest, GuestInfoRequest, GuestInfoResponse, HealthRequest,
    HealthResponse, ListProcessesResponse, OOMEvent, ProcessRequest, RemoveContainerRequest,
    ResizePtyRequest, ShutdownRequest, SignalProcessRequest, StartContainerResponse,
    StatsContainerResponse, StdioConfig, Storage, UpdateContainerRequest, VersionRequest,
    VersionResponse, WaitProcessResponse,
};
use crate::protocol::agent_ttrpc::AgentService;
use crate::reaper::Reaper;

type Rpc<T> = ttrpc::Result<T>;

/// Where the agent keeps per-container state and scratch space, and which binary it
/// re-executes as the container init helper.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub state_dir: PathBuf,
    pub init_binary: Option<PathBuf>,
    /// PID 1 of a ward guest: layers arrive as block devices, Shutdown powers off.
    pub in_guest: bool,
}

#[derive(Debug)]
pub struct Service {
    pub registry: Arc<Registry>,
    reaper: Reaper,
    opts: ServiceOptions,
    oom: broadcast::Sender<String>,
    pub shutdown: Arc<Notify>,
    /// Set when the agent is going down: long-polling RPCs (GetOOMEvent) return at once,
    /// so the ttrpc server can finish its in-flight calls and stop.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Service {
    pub fn new(reaper: Reaper, opts: ServiceOptions) -> Self {
        Self {
            registry: Arc::new(Registry::default()),
            reaper,
            opts,
            oom: broadcast::channel(64).0,
            shutdown: Arc::new(Notify::new()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// Polls every container's OOM kill counter and announces each increase: the OOM killer
    /// may take any process of the container, not only its init.
    pub fn spawn_oom_watch(self: &Arc<Self>) {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let ids = service.registry.ids();
                seen.retain(|id, _| ids.contains(id));
                for id in ids {
                    let Ok(entry) = service.registry.get(&id) else {
                        continue;
                    };
                    // Never block the runtime behind a create or delete holding the lock.
                    let count = match entry.container.try_lock() {
                        Ok(guard) => guard.as_ref().map(Container::oom_count),
                        Err(_) => None,
                    };
                    let Some(count) = count else { continue };
                    let before = seen.insert(id.clone(), count).unwrap_or(0);
                    if count > before {
                        let _ = service.oom.send(id);
                    }
                }
            }
        });
    }

    /// Ends long-polling RPCs; called before the server stops.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Kills and deletes every container (agent shutdown).
    pub async fn remove_all(&self) {
        for id in self.registry.ids() {
            if let Err(e) = self.remove(&id, Duration::from_secs(2)).await {
                log::warn!("removing container {id} at shutdown: {e}");
            }
        }
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RpcError> {
        let entry = self.registry.get(id)?;
        if entry.init.exit().is_none() {
            let _ = with_container(&entry, |c| c.signal(Signal::SIGTERM, true)).await;
            if tokio::time::timeout(grace, entry.init.wait())
                .await
                .is_err()
            {
                let _ = with_container(&entry, |c| c.signal(Signal::SIGKILL, true)).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), entry.init.wait()).await;
            }
        }
        let taken = entry.container.lock().expect("lock").take();
        if let Some(container) = taken {
            tokio::task::spawn_blocking(move || container.delete())
                .await
                .map_err(|e| RpcError::Internal(format!("delete task of {id}: {e}")))??;
        }
        if let Some(scratch) = &entry.scratch {
            let _ = std::fs::remove_dir_all(scratch);
        }
        self.registry.remove(id);
        Ok(())
    }

    fn watch_exit(&self, entry: Option<Arc<Entry>>, proc: Arc<Proc>) {
        let reaper = self.reaper.clone();
        tokio::spawn(async move {
            let exit = reaper.wait(proc.pid).await;
            if let Some(entry) = entry {
                // The container learns of its exit before any waiter does, so a delete that
                // follows a wait never waits on a reaped pid.
                let entry2 = Arc::clone(&entry);
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(c) = entry2.container.lock().expect("lock").as_mut() {
                        c.mark_exited(crate::container::ExitStatus {
                            code: exit.status,
                            signal: exit.signal,
                            oom_killed: false,
                        });
                    }
                })
                .await;
            }
            proc.exited(exit);
        });
    }

    fn rootfs(
        &self,
        req: &CreateContainerRequest,
        scratch: &Path,
    ) -> Result<Option<Rootfs>, RpcError> {
        if !req.layers.is_empty() {
            let lower = req
                .layers
                .iter()
                .map(|s| self.layer_dir(s))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(Rootfs::Layers {
                lower,
                scratch: scratch.to_path_buf(),
            }));
        }
        match req.rootfs.as_ref() {
            Some(storage) if !storage.source.is_empty() || !storage.device_serial.is_empty() => {
                Ok(Some(Rootfs::Path(self.layer_dir(storage)?)))
            }
            _ => Ok(None),
        }
    }

    /// A layer as a directory: as given on the host; mounted from its drive in a guest.
    fn layer_dir(&self, storage: &Storage) -> Result<PathBuf, RpcError> {
        if storage.device_serial.is_empty() {
            let path = PathBuf::from(&storage.source);
            if !path.is_absolute() {
                return Err(RpcError::Invalid(format!(
                    "layer source {:?} is not an absolute path",
                    storage.source
                )));
            }
            return Ok(path);
        }
        super::layers::mount_by_serial(&self.opts.state_dir, storage)
    }
}

async fn with_container<T: Send + 'static>(
    entry: &Arc<Entry>,
    f: impl FnOnce(&mut Container) -> crate::container::Result<T> + Send + 'static,
) -> Result<T, RpcError> {
    let entry = Arc::clone(entry);
    tokio::task::spawn_blocking(move || {
        let mut guard = entry.container.lock().expect("lock");
        let c = guard.as_mut().ok_or_else(|| {
            RpcError::Precondition(format!("container {:?} is being removed", entry.id))
        })?;
        f(c).map_err(RpcError::from)
    })
    .await
    .map_err(|e| RpcError::Internal(format!("container task: {e}")))?
}

fn check_id(what: &str, id: &str) -> Result<(), RpcError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(RpcError::Invalid(format!(
            "{what} {id:?} must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.'"
        )))
    }
}

/// Pipes (or /dev/null) per stream the host asked for, or a pty.
fn stdio_for(cfg: Option<&StdioConfig>) -> Result<(Stdio, Ends), RpcError> {
    let default = StdioConfig::new();
    let cfg = cfg.unwrap_or(&default);
    if cfg.terminal {
        return Ok((Stdio::Terminal, Ends::default()));
    }
    let io = |e: std::io::Error| RpcError::Internal(format!("creating stdio: {e}"));
    let null = || {
        File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
    };
    let mut ends = Ends::default();
    let stdin: OwnedFd = if cfg.stdin {
        let (r, w) = nix::unistd::pipe().map_err(|e| RpcError::Internal(format!("pipe: {e}")))?;
        ends.stdin = Some(File::from(w));
        r
    } else {
        null().map_err(io)?
    };
    let out = |wanted: bool, slot: &mut Option<File>| -> Result<OwnedFd, RpcError> {
        if wanted {
            let (r, w) =
                nix::unistd::pipe().map_err(|e| RpcError::Internal(format!("pipe: {e}")))?;
            *slot = Some(File::from(r));
            Ok(w)
        } else {
            null().map_err(io)
        }
    };
    let stdout = out(cfg.stdout, &mut ends.stdout)?;
    let stderr = out(cfg.stderr, &mut ends.stderr)?;
    for f in [&ends.stdin, &ends.stdout, &ends.stderr]
        .into_iter()
        .flatten()
    {
        let _ = nix::fcntl::fcntl(
            f,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    Ok((
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        },
        ends,
    ))
}

fn write_file(file: &FileCopy) -> Result<(), RpcError> {
    let path = Path::new(&file.path);
    if !path.is_absolute() {
        return Err(RpcError::Invalid(format!(
            "file path {:?} is not absolute",
            file.path
        )));
    }
    let io =
        |op: &str, e: std::io::Error| RpcError::Internal(format!("{op} {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("creating parent of", e))?;
    }
    std::fs::write(path, &file.data).map_err(|e| io("writing", e))?;
    let mode = if file.mode == 0 { 0o644 } else { file.mode };
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io("chmod", e))?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(file.uid)),
        Some(nix::unistd::Gid::from_raw(file.gid)),
    )
    .map_err(|e| RpcError::Internal(format!("chown {}: {e}", path.display())))
}

fn exit_response(exit: crate::reaper::Exit) -> WaitProcessResponse {
    let mut r = WaitProcessResponse::new();
    r.exit_status = exit.status;
    r.exited_at_unix_nanos = exit
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    r
}

#[async_trait]
impl AgentService for Service {
    async fn health(&self, _: &TtrpcContext, _: HealthRequest) -> Rpc<HealthResponse> {
        let mut r = HealthResponse::new();
        r.serving = true;
        Ok(r)
    }

    async fn version(&self, _: &TtrpcContext, _: VersionRequest) -> Rpc<VersionResponse> {
        let mut r = VersionResponse::new();
        env!("CARGO_PKG_VERSION").clone_into(&mut r.agent_version);
        r.protocol_version = PROTOCOL_VERSION;
        Ok(r)
    }

    async fn guest_info(&self, _: &TtrpcContext, _: GuestInfoRequest) -> Rpc<GuestInfoResponse> {
        Ok(super::info::guest_info(self.opts.in_guest))
    }

    async fn create_sandbox(&self, _: &TtrpcContext, req: CreateSandboxRequest) -> Rpc<Empty> {
        check_id("sandbox id", &req.sandbox_id)?;
        for file in &req.dns_files {
            write_file(file)?;
        }
        if self.opts.in_guest && !req.hostname.is_empty() {
            nix::unistd::sethostname(&req.hostname)
                .map_err(|e| RpcError::Internal(format!("sethostname {:?}: {e}", req.hostname)))?;
        }
        Ok(Empty::new())
    }

    async fn destroy_sandbox(&self, _: &TtrpcContext, req: DestroySandboxRequest) -> Rpc<Empty> {
        for id in self.registry.ids() {
            let in_sandbox = self
                .registry
                .get(&id)
                .is_ok_and(|e| e.sandbox_id == req.sandbox_id);
            if in_sandbox {
                self.remove(&id, Duration::from_secs(2)).await?;
            }
        }
        Ok(Empty::new())
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> Rpc<CreateContainerResponse> {
        let id = req.container_id.clone();
        check_id("container id", &id)?;
        let reservation = self.registry.reserve(&id)?;
        let spec: Spec = serde_json::from_slice(&req.spec_json)
            .map_err(|e| RpcError::Invalid(format!("spec_json of container {id:?}: {e}")))?;
        for file in &req.files {
            write_file(file)?;
        }
        let scratch = self.opts.state_dir.join("scratch").join(&id);
        let rootfs = self.rootfs(&req, &scratch)?;
        let (stdio, mut ends) = stdio_for(req.stdio.as_ref())?;
        let opts = CreateOptions {
            id: id.clone(),
            spec,
            rootfs,
            bundle: None,
            stdio,
            state_dir: self.opts.state_dir.join("containers"),
            init_binary: self.opts.init_binary.clone(),
        };
        let mut container = tokio::task::spawn_blocking(move || Container::create(opts))
            .await
            .map_err(|e| RpcError::Internal(format!("create task of {id:?}: {e}")))?
            .map_err(RpcError::from)?;
        if let Some(io) = container.take_io() {
            ends.terminal = io.terminal;
        }
        let pid = container.pid().ok_or_else(|| {
            RpcError::Internal(format!(
                "container {:?} has no pid after create",
                req.container_id
            ))
        })?;
        let init = Arc::new(Proc::new(pid, ends));
        let entry = self.registry.insert(
            Entry {
                id: req.container_id.clone(),
                sandbox_id: req.sandbox_id.clone(),
                container: std::sync::Mutex::new(Some(container)),
                init: Arc::clone(&init),
                execs: std::sync::Mutex::new(std::collections::HashMap::new()),
                scratch: Some(scratch),
            },
            &reservation,
        );
        drop(reservation);
        self.watch_exit(Some(entry), init);
        let mut r = CreateContainerResponse::new();
        r.pid = pid as u32;
        Ok(r)
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> Rpc<StartContainerResponse> {
        let entry = self.registry.get(&req.container_id)?;
        if let Err(e) = with_container(&entry, Container::start).await {
            // The process died trying to exec, and the library reaped it, perhaps before
            // the reaper saw it: record the exit here, or a remove would wait for it forever.
            if entry.init.exit().is_none() {
                entry.init.exited(crate::reaper::Exit {
                    pid: entry.init.pid,
                    status: 127,
                    signal: None,
                    at: std::time::SystemTime::now(),
                });
            }
            return Err(e.into());
        }
        let mut r = StartContainerResponse::new();
        r.pid = entry.init.pid as u32;
        Ok(r)
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> Rpc<ExecProcessResponse> {
        check_id("exec id", &req.exec_id)?;
        let entry = self.registry.get(&req.container_id)?;
        if entry.execs.lock().expect("lock").contains_key(&req.exec_id) {
            return Err(RpcError::ExecExists {
                container: req.container_id,
                exec: req.exec_id,
            }
            .into());
        }
        let process: Process = serde_json::from_slice(&req.process_json).map_err(|e| {
            RpcError::Invalid(format!(
                "process_json of exec {:?} in {:?}: {e}",
                req.exec_id, req.container_id
            ))
        })?;
        let (stdio, mut ends) = stdio_for(req.stdio.as_ref())?;
        let mut exec = with_container(&entry, move |c| c.exec(&process, stdio)).await?;
        if let Some(io) = exec.take_io() {
            ends.terminal = io.terminal;
        }
        let proc = Arc::new(Proc::new(exec.pid(), ends));
        entry
            .execs
            .lock()
            .expect("lock")
            .insert(req.exec_id.clone(), Arc::clone(&proc));
        self.watch_exit(None, Arc::clone(&proc));
        let mut r = ExecProcessResponse::new();
        r.pid = proc.pid as u32;
        Ok(r)
    }

    async fn signal_process(&self, _: &TtrpcContext, req: SignalProcessRequest) -> Rpc<Empty> {
        let signal = Signal::try_from(req.signal as i32).map_err(|_| {
            RpcError::Invalid(format!(
                "signal {} is not a valid signal number",
                req.signal
            ))
        })?;
        if req.exec_id.is_empty() {
            let entry = self.registry.get(&req.container_id)?;
            if entry.init.exit().is_some() {
                return Err(RpcError::Precondition(format!(
                    "container {:?} is not running",
                    req.container_id
                ))
                .into());
            }
            with_container(&entry, move |c| c.signal(signal, req.all)).await?;
        } else {
            let proc = self
                .registry
                .process(&req.container_id, Some(&req.exec_id))?;
            if proc.exit().is_some() {
                return Err(
                    RpcError::Precondition(format!("exec {:?} has exited", req.exec_id)).into(),
                );
            }
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(proc.pid), signal)
                .map_err(|e| RpcError::Internal(format!("kill {} {signal}: {e}", proc.pid)))?;
        }
        Ok(Empty::new())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: ProcessRequest,
    ) -> Rpc<WaitProcessResponse> {
        let proc = self
            .registry
            .process(&req.container_id, Some(&req.exec_id))?;
        Ok(exit_response(proc.wait().await))
    }

    async fn close_stdin(&self, _: &TtrpcContext, req: ProcessRequest) -> Rpc<Empty> {
        self.registry
            .process(&req.container_id, Some(&req.exec_id))?
            .close_stdin();
        Ok(Empty::new())
    }

    async fn remove_process(&self, _: &TtrpcContext, req: ProcessRequest) -> Rpc<Empty> {
        self.registry.remove_exec(&req.container_id, &req.exec_id)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> Rpc<Empty> {
        let proc = self
            .registry
            .process(&req.container_id, Some(&req.exec_id))?;
        let ends = proc.ends.lock().expect("lock");
        let master = ends.terminal.as_ref().ok_or_else(|| {
            RpcError::Precondition(format!(
                "process {:?}/{:?} has no terminal",
                req.container_id, req.exec_id
            ))
        })?;
        let size = libc::winsize {
            ws_row: req.rows as u16,
            ws_col: req.cols as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which lives for the call; the
        // master fd is open while `ends` is locked.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) };
        if rc != 0 {
            return Err(RpcError::Internal(format!(
                "TIOCSWINSZ: {}",
                std::io::Error::last_os_error()
            ))
            .into());
        }
        Ok(Empty::new())
    }

    async fn update_container(&self, _: &TtrpcContext, req: UpdateContainerRequest) -> Rpc<Empty> {
        let entry = self.registry.get(&req.container_id)?;
        let resources: LinuxResources =
            serde_json::from_slice(&req.resources_json).map_err(|e| {
                RpcError::Invalid(format!("resources_json of {:?}: {e}", req.container_id))
            })?;
        with_container(&entry, move |c| c.update(&resources)).await?;
        Ok(Empty::new())
    }

    async fn stats_container(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> Rpc<StatsContainerResponse> {
        let entry = self.registry.get(&req.container_id)?;
        let s = with_container(&entry, |c| c.stats()).await?;
        let mut r = StatsContainerResponse::new();
        r.cpu_usage_ns = s.cpu_usage_ns;
        r.cpu_user_ns = s.cpu_user_ns;
        r.cpu_system_ns = s.cpu_system_ns;
        r.cpu_throttled_periods = s.cpu_throttled_periods;
        r.cpu_throttled_ns = s.cpu_throttled_ns;
        r.memory_usage_bytes = s.memory_usage;
        r.memory_max_usage_bytes = s.memory_max_usage;
        r.memory_limit_bytes = s.memory_limit;
        r.memory_cache_bytes = s.memory_cache;
        r.pids_current = s.pids_current;
        r.pids_limit = s.pids_limit;
        r.io_read_bytes = s.io_read_bytes;
        r.io_write_bytes = s.io_write_bytes;
        r.io_read_ops = s.io_read_ops;
        r.io_write_ops = s.io_write_ops;
        r.oom_kills = s.oom_kills;
        r.cgroup_version = super::info::cgroup_version();
        Ok(r)
    }

    async fn pause_container(&self, _: &TtrpcContext, req: ContainerRequest) -> Rpc<Empty> {
        let entry = self.registry.get(&req.container_id)?;
        with_container(&entry, Container::pause).await?;
        Ok(Empty::new())
    }

    async fn resume_container(&self, _: &TtrpcContext, req: ContainerRequest) -> Rpc<Empty> {
        let entry = self.registry.get(&req.container_id)?;
        with_container(&entry, Container::resume).await?;
        Ok(Empty::new())
    }

    async fn remove_container(&self, _: &TtrpcContext, req: RemoveContainerRequest) -> Rpc<Empty> {
        let grace = Duration::from_millis(u64::from(req.timeout_ms));
        self.remove(&req.container_id, grace).await?;
        Ok(Empty::new())
    }

    async fn list_processes(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> Rpc<ListProcessesResponse> {
        let entry = self.registry.get(&req.container_id)?;
        let pids = with_container(&entry, |c| Ok(c.pids())).await?;
        let mut r = ListProcessesResponse::new();
        r.pids = pids.into_iter().map(|p| p as u32).collect();
        Ok(r)
    }

    async fn get_oom_event(&self, _: &TtrpcContext, _: GetOOMEventRequest) -> Rpc<OOMEvent> {
        let mut rx = self.oom.subscribe();
        let mut closing = self.closing.subscribe();
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(id) => {
                        let mut r = OOMEvent::new();
                        r.container_id = id;
                        return Ok(r);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        Err(RpcError::Precondition("agent is shutting down".into()).into())
    }

    async fn copy_file(&self, _: &TtrpcContext, req: CopyFileRequest) -> Rpc<Empty> {
        let file = req
            .file
            .as_ref()
            .ok_or_else(|| RpcError::Invalid("CopyFile without a file".into()))?;
        write_file(file)?;
        Ok(Empty::new())
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> Rpc<Empty> {
        self.remove_all().await;
        self.shutdown.notify_one();
        Ok(Empty::new())
    }
}
