//! [`Container`]: create, start, state, signal, wait, pause/resume, update, stats, delete.
//!
//! create runs the init helper up to the start barrier (like `runc create`); start releases
//! it. Every failure on the way undoes what was done: processes killed and reaped, cgroups
//! removed, scratch and state directories deleted.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::Serialize;

use super::cgroups::{self, CgroupManager, Stats};
use super::error::{Error, Result};
use super::exec::{self, ExecProcess};
use super::hooks::{self, Phase};
use super::namespaces;
use super::options::{CreateOptions, ProcessIo, Rootfs, Stdio};
use super::protocol::{FromInit, InitConfig, InitMode, RootfsPlan, ToInit, recv, send};
use super::spawn;
use super::validate;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Built, waiting at the start barrier.
    Created,
    Running,
    Paused,
    /// The process exited (or was never started and was killed).
    Stopped,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal (what shells and
    /// containerd report).
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Killed by the OOM killer of the container's cgroup.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// From a waitpid status; `None` for stops and continues.
    pub fn from_wait(status: WaitStatus) -> Option<Self> {
        match status {
            WaitStatus::Exited(_, code) => Some(Self {
                code,
                signal: None,
                oom_killed: false,
            }),
            WaitStatus::Signaled(_, sig, _) => Some(Self {
                code: 128 + sig as i32,
                signal: Some(sig as i32),
                oom_killed: false,
            }),
            _ => None,
        }
    }
}

/// The OCI state, as written to `<state_dir>/<id>/state.json`.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: Option<i32>,
    pub bundle: Option<PathBuf>,
}

/// A container built by this library.
#[derive(Debug)]
pub struct Container {
    id: String,
    spec: Spec,
    bundle: Option<PathBuf>,
    status: Status,
    pid: Option<i32>,
    /// The init's end of the start barrier, until start.
    barrier: Option<UnixStream>,
    cgroup: Box<dyn CgroupManager>,
    /// Directories this library created and must remove on delete.
    owned_dirs: Vec<PathBuf>,
    state_dir: PathBuf,
    init_binary: PathBuf,
    exit: Option<ExitStatus>,
    io: Option<ProcessIo>,
    deleted: bool,
}

impl Drop for Container {
    /// A container dropped without `delete` is deleted anyway: nothing outlives its owner.
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            log::warn!("container {}: cleanup on drop: {e}", self.id);
        }
    }
}

/// Undoes a half-made container when create fails.
struct Cleanup {
    pids: Vec<i32>,
    cgroup: Option<Box<dyn CgroupManager>>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn run(self) {
        for pid in &self.pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(*pid), None);
        }
        if let Some(cg) = self.cgroup {
            for pid in cg.pids() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if let Err(e) = cg.destroy() {
                log::warn!("cleanup: {e}");
            }
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

impl Container {
    /// Builds the container up to the start barrier: namespaces, cgroup, rootfs, mounts,
    /// devices, pivot_root. The process is not running user code yet.
    pub fn create(opts: CreateOptions) -> Result<Self> {
        let id = opts.id.clone();
        validate::id(&id)?;
        validate::spec(&id, &opts.spec)?;
        let rootfs = match opts.rootfs.clone() {
            Some(r) => r,
            None => Rootfs::Path(validate::root_path(
                &id,
                &opts.spec,
                opts.bundle.as_deref(),
            )?),
        };
        let ns_plan = namespaces::plan(&id, &opts.spec)?;
        let cgroups_path = opts
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| PathBuf::from(format!("/ward/{id}")));

        let mut cleanup = Cleanup {
            pids: Vec::new(),
            cgroup: None,
            dirs: Vec::new(),
        };
        match Self::build(opts, &rootfs, ns_plan, &cgroups_path, &mut cleanup) {
            Ok(c) => Ok(c),
            Err(e) => {
                cleanup.run();
                Err(e)
            }
        }
    }

    fn build(
        opts: CreateOptions,
        rootfs: &Rootfs,
        ns_plan: Vec<super::protocol::NamespacePlan>,
        cgroups_path: &Path,
        cleanup: &mut Cleanup,
    ) -> Result<Self> {
        let id = opts.id.clone();
        let state_dir = opts.state_dir.join(&id);
        if state_dir.exists() {
            return Err(Error::InvalidSpec {
                id: id.clone(),
                field: "id",
                reason: format!("a container with this id exists ({})", state_dir.display()),
            });
        }
        fs::create_dir_all(&state_dir).map_err(|e| Error::io("mkdir state dir", &state_dir, e))?;
        cleanup.dirs.push(state_dir.clone());

        let plan = match rootfs {
            Rootfs::Path(p) => {
                validate::rootfs_dir(&id, p)?;
                RootfsPlan::Path(p.clone())
            }
            Rootfs::Layers { lower, scratch } => {
                // A layer is a directory, or a read-only block device (an erofs/ext4 layer
                // image attached to the guest) that init mounts under scratch/layers/<n>.
                let mut devices = Vec::new();
                let mut lowers = Vec::new();
                for (n, l) in lower.iter().enumerate() {
                    if validate::is_block_device(l) {
                        let at = scratch.join("layers").join(n.to_string());
                        devices.push((l.clone(), at.clone()));
                        lowers.push(at);
                    } else {
                        validate::rootfs_dir(&id, l)?;
                        lowers.push(l.clone());
                    }
                }
                if !devices.is_empty() {
                    let layers = scratch.join("layers");
                    if layers.exists() {
                        return Err(Error::InvalidSpec {
                            id: id.clone(),
                            field: "rootfs.scratch",
                            reason: format!("{} already exists", layers.display()),
                        });
                    }
                    cleanup.dirs.push(layers);
                    for (_, at) in &devices {
                        fs::create_dir_all(at)
                            .map_err(|e| Error::io("mkdir layer mount point", at, e))?;
                    }
                }
                let (upper, work, target) = (
                    scratch.join("upper"),
                    scratch.join("work"),
                    scratch.join("rootfs"),
                );
                for d in [&upper, &work, &target] {
                    if d.exists() {
                        return Err(Error::InvalidSpec {
                            id: id.clone(),
                            field: "rootfs.scratch",
                            reason: format!("{} already exists", d.display()),
                        });
                    }
                    fs::create_dir_all(d).map_err(|e| Error::io("mkdir scratch", d, e))?;
                    cleanup.dirs.push(d.clone());
                }
                RootfsPlan::Overlay {
                    devices,
                    lower: lowers,
                    upper,
                    work,
                    target,
                }
            }
        };

        // Registered for cleanup before creation: a half-made hierarchy is removed too.
        let cgroup = &**cleanup.cgroup.insert(cgroups::manager(cgroups_path)?);
        cgroup.create()?;
        let cgroup_v2 = cgroup.is_v2();

        let init_binary = spawn::init_binary(opts.init_binary.as_deref());
        let mut helper = spawn::spawn(&init_binary, opts.stdio)?;
        let helper_pid = helper.child.id() as i32;
        cleanup.pids.push(helper_pid);
        // The helper joins the cgroup before it clones, so the container process is born
        // there and a new cgroup namespace is rooted at it.
        cgroup.add(helper_pid)?;

        let config = InitConfig {
            id: id.clone(),
            spec: Box::new(opts.spec.clone()),
            mode: InitMode::Create { rootfs: plan },
            namespaces: ns_plan,
            terminal: helper.terminal(),
            cgroup_v2,
        };
        let proto = |reason: String| Error::Protocol {
            id: id.clone(),
            reason,
        };
        send(&mut helper.sock, &ToInit::Config(Box::new(config)))
            .map_err(|e| proto(format!("sending config: {e}")))?;
        // The helper (Pid) and the container process (Ready, Error) write to the same
        // socket from two processes: take the messages in whatever order they come.
        let (mut pid, mut ready, mut failure) = (None, false, None);
        while !(ready && pid.is_some()) {
            match recv::<FromInit>(&mut helper.sock)
                .map_err(|e| proto(format!("reading from init: {e}")))?
            {
                Some(FromInit::WriteMaps) => {
                    namespaces::write_id_maps(&id, helper_pid, &opts.spec)?;
                    send(&mut helper.sock, &ToInit::MapsWritten)
                        .map_err(|e| proto(format!("sending MapsWritten: {e}")))?;
                }
                Some(FromInit::Pid(p)) => {
                    pid = Some(p);
                    cleanup.pids.push(p);
                }
                Some(FromInit::Ready) => ready = true,
                // Keep reading until EOF: the pid may still come, and cleanup must reap it.
                Some(FromInit::Error(message)) => failure = Some(message),
                None => break,
            }
        }
        if let Some(message) = failure {
            return Err(Error::Init {
                id: id.clone(),
                message,
            });
        }
        let (true, Some(pid)) = (ready, pid) else {
            let status = helper.child.wait().ok();
            return Err(proto(format!(
                "init exited before the rootfs was ready ({status:?})"
            )));
        };
        // Limits apply once the rootfs is built, as runc does: the device rules would
        // otherwise refuse init the layer devices and nodes it mounts and creates.
        if let Some(res) = opts
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
        {
            let mut res = res.clone();
            res.set_devices(super::devices::cgroup_rules(&opts.spec));
            cgroup.apply(&res)?;
        }
        helper.take_console(&id)?;
        // The helper exits right after reporting the pid; reap it.
        let _ = helper.child.wait();
        cleanup.pids.retain(|p| *p != helper_pid);

        let container = Self {
            id,
            spec: opts.spec,
            bundle: opts.bundle,
            status: Status::Created,
            pid: Some(pid),
            barrier: Some(helper.sock),
            cgroup: cleanup.cgroup.take().expect("set above"),
            owned_dirs: std::mem::take(&mut cleanup.dirs),
            state_dir,
            init_binary,
            exit: None,
            io: Some(helper.io),
            deleted: false,
        };
        cleanup.pids.clear();
        container.save_state();
        let hooks = container.spec.hooks().clone();
        let state = container.oci_state();
        hooks::run(hooks.as_ref(), Phase::CreateRuntime, &state)?; // on error, drop deletes
        hooks::run(hooks.as_ref(), Phase::Prestart, &state)?;
        Ok(container)
    }

    /// Releases the start barrier: the process applies user, capabilities, seccomp and execs.
    /// Returns once the exec succeeded, or the error that stopped it.
    pub fn start(&mut self) -> Result<()> {
        self.expect_status("start", &[Status::Created])?;
        let mut sock = self
            .barrier
            .take()
            .expect("created containers hold the barrier");
        let proto = |reason: String| Error::Protocol {
            id: self.id.clone(),
            reason,
        };
        send(&mut sock, &ToInit::Start).map_err(|e| proto(format!("sending Start: {e}")))?;
        // The socket is close-on-exec in the process: EOF means exec succeeded.
        match recv::<FromInit>(&mut sock).map_err(|e| proto(format!("reading from init: {e}")))? {
            None => {
                self.status = Status::Running;
                self.save_state();
                // The spec: a failing poststart hook is logged, the container keeps running.
                if let Err(e) = hooks::run(
                    self.spec.hooks().as_ref(),
                    Phase::Poststart,
                    &self.oci_state(),
                ) {
                    log::warn!("container {}: {e}", self.id);
                }
                Ok(())
            }
            Some(FromInit::Error(message)) => {
                let _ = self.wait();
                Err(Error::Init {
                    id: self.id.clone(),
                    message,
                })
            }
            Some(other) => Err(proto(format!("unexpected {other:?} after Start"))),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Pid of the container process, in the caller's pid namespace.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The cgroup directory (the memory hierarchy's on v1).
    pub fn cgroup_path(&self) -> PathBuf {
        self.cgroup.path()
    }

    /// Takes the caller's ends of the process's stdio (once).
    pub fn take_io(&mut self) -> Option<ProcessIo> {
        self.io.take()
    }

    /// Current OCI state; notices an exit that nobody waited for yet.
    pub fn state(&mut self) -> State {
        let _ = self.try_wait();
        State {
            oci_version: "1.0.2".into(),
            id: self.id.clone(),
            status: self.status,
            pid: self.pid,
            bundle: self.bundle.clone(),
        }
    }

    /// Sends `signal` to the container process, or with `all` to every process in its cgroup.
    pub fn signal(&self, signal: Signal, all: bool) -> Result<()> {
        if !all && self.exit.is_some() {
            // The pid was reaped and may belong to someone else now.
            return Err(Error::State {
                id: self.id.clone(),
                op: "signal",
                state: self.status.name(),
            });
        }
        let pids = if all {
            self.cgroup.pids()
        } else {
            self.pid.into_iter().collect()
        };
        for pid in pids {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(Error::sys(format!("kill {pid} with {signal}"), e)),
            }
        }
        if all && self.status == Status::Paused {
            // Frozen tasks act on signals only once thawed; a kill-all should kill now.
            if signal == Signal::SIGKILL {
                self.cgroup.freeze(false)?;
            }
        }
        Ok(())
    }

    /// Waits for the container process to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let pid = self.pid.ok_or_else(|| Error::State {
            id: self.id.clone(),
            op: "wait",
            state: self.status.name(),
        })?;
        loop {
            let status = waitpid(Pid::from_raw(pid), None)
                .map_err(|e| Error::sys(format!("waitpid {pid}"), e))?;
            if let Some(exit) = ExitStatus::from_wait(status) {
                return Ok(self.exited(exit));
            }
        }
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let Some(pid) = self.pid else { return Ok(None) };
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => Ok(ExitStatus::from_wait(status).map(|e| self.exited(e))),
            Err(e) => Err(Error::sys(format!("waitpid {pid}"), e)),
        }
    }

    /// Records an exit the caller reaped itself (an async server waits for the pid on its
    /// own task instead of calling [`Container::wait`]); fills in `oom_killed`.
    pub fn mark_exited(&mut self, exit: ExitStatus) -> ExitStatus {
        self.exited(exit)
    }

    fn exited(&mut self, mut exit: ExitStatus) -> ExitStatus {
        exit.oom_killed = exit.signal == Some(libc::SIGKILL) && self.cgroup.oom_kill_count() > 0;
        self.exit = Some(exit);
        self.status = Status::Stopped;
        self.barrier = None;
        self.save_state();
        exit
    }

    /// Runs another process in the container's namespaces and cgroup.
    pub fn exec(&mut self, process: &Process, stdio: Stdio) -> Result<ExecProcess> {
        self.expect_status("exec", &[Status::Created, Status::Running])?;
        let pid = self.pid.expect("created containers have a pid");
        exec::run(
            &self.id,
            &self.spec,
            pid,
            self.cgroup.as_ref(),
            &self.init_binary,
            process,
            stdio,
        )
    }

    /// Applies new resource limits.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        self.expect_status(
            "update",
            &[Status::Created, Status::Running, Status::Paused],
        )?;
        self.cgroup.apply(resources)
    }

    /// Freezes every process of the container.
    pub fn pause(&mut self) -> Result<()> {
        self.expect_status("pause", &[Status::Running])?;
        self.cgroup.freeze(true)?;
        self.status = Status::Paused;
        self.save_state();
        Ok(())
    }

    /// Thaws a paused container.
    pub fn resume(&mut self) -> Result<()> {
        self.expect_status("resume", &[Status::Paused])?;
        self.cgroup.freeze(false)?;
        self.status = Status::Running;
        self.save_state();
        Ok(())
    }

    pub fn stats(&self) -> Result<Stats> {
        self.cgroup.stats()
    }

    /// A descriptor that becomes readable when the container's cgroup hits OOM (poll it,
    /// then compare [`Container::oom_count`]).
    pub fn oom_watch(&self) -> Result<cgroups::oom::OomWatch> {
        self.cgroup.oom_watch()
    }

    /// OOM kills in the container's cgroup so far.
    pub fn oom_count(&self) -> u64 {
        self.cgroup.oom_kill_count()
    }

    /// Every process in the container's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.cgroup.pids()
    }

    /// Kills whatever still runs, reaps the container process, removes the cgroup, scratch
    /// and state directories. Mounts go with the container's mount namespace.
    pub fn delete(mut self) -> Result<()> {
        self.teardown()
    }

    /// What delete does; idempotent, so Drop can finish a container nobody deleted.
    fn teardown(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        if self.exit.is_none() {
            if let Some(pid) = self.pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Without a PID namespace nothing kills the rest for us; processes may fork while
        // we kill, so repeat until the cgroup is empty (or give up and let rmdir report it).
        for _ in 0..50 {
            let pids = self.cgroup.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if self.status == Status::Paused {
                // v1 frozen tasks die only once thawed.
                self.cgroup.freeze(false)?;
                self.status = Status::Running;
            }
            if self.exit.is_none() && self.pid.is_some() {
                self.wait()?;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.barrier = None;
        if self.exit.is_none() && self.pid.is_some() {
            self.wait()?;
        }
        self.cgroup.destroy()?;
        for d in self.owned_dirs.iter().rev() {
            match fs::remove_dir_all(d) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", d, e));
                }
                _ => {}
            }
        }
        self.deleted = true;
        if let Err(e) = hooks::run(
            self.spec.hooks().as_ref(),
            Phase::Poststop,
            &self.oci_state(),
        ) {
            log::warn!("container {}: {e}", self.id);
        }
        Ok(())
    }

    fn expect_status(&self, op: &'static str, ok: &[Status]) -> Result<()> {
        if ok.contains(&self.status) {
            Ok(())
        } else {
            Err(Error::State {
                id: self.id.clone(),
                op,
                state: self.status.name(),
            })
        }
    }

    fn oci_state(&self) -> State {
        State {
            oci_version: "1.0.2".into(),
            id: self.id.clone(),
            status: self.status,
            pid: self.pid,
            bundle: self.bundle.clone(),
        }
    }

    /// Best effort: state.json is for observers; the library never reads it back.
    fn save_state(&self) {
        let state = State {
            oci_version: "1.0.2".into(),
            id: self.id.clone(),
            status: self.status,
            pid: self.pid,
            bundle: self.bundle.clone(),
        };
        if let Ok(json) = serde_json::to_vec_pretty(&state) {
            let _ = fs::write(self.state_dir.join("state.json"), json);
        }
    }
}
