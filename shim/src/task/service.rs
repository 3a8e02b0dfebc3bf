//! The task service containerd talks to: every call becomes agent RPCs on the shim's
//! sandbox. One service per shim, serving every container of the sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::TtrpcContext;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
use containerd_shim::protos::shim::shim as api;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::Mutex;
use ttrpc::Code;
use ward_agent::protocol::agent;

use super::events::{
    Events, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed,
    TaskStart,
};
use super::io::{ProcessIo, Stdio};
use super::metrics;
use super::rpc::{agent_err, container_request, not_found, now, remove, status};
use super::state::{Container, Exit, Process};
use crate::config::Config;
use crate::options;
use crate::sandbox::{self, RootfsSource, Sandbox};

/// The bundle file naming the sandbox directory, for `shim delete` after a crash.
pub const SANDBOX_FILE: &str = "ward-sandbox";

/// containerd's task API for one sandbox.
#[derive(Clone)]
pub struct TaskService {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// The sandbox id: the id of the container that started this shim.
    pub(super) sandbox_id: String,
    pub(super) events: Events,
    pub(super) sandbox: Mutex<Option<Arc<dyn Sandbox>>>,
    pub(super) containers: Mutex<HashMap<String, Container>>,
    /// OOM kills already reported per container (the agent's counter), so the agent's
    /// event and the shim's own check at exit never report one kill twice.
    pub(super) oom_reported: Mutex<HashMap<String, u64>>,
    pub(super) exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService")
            .field("sandbox_id", &self.inner.sandbox_id)
            .finish_non_exhaustive()
    }
}

impl TaskService {
    pub fn new(
        sandbox_id: &str,
        namespace: &str,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sandbox_id: sandbox_id.to_owned(),
                events: Events::new(publisher, namespace),
                sandbox: Mutex::new(None),
                containers: Mutex::new(HashMap::new()),
                oom_reported: Mutex::new(HashMap::new()),
                exit,
            }),
        }
    }

    /// The sandbox, started on the first Create with the isolation that container asks for.
    async fn sandbox_for(
        &self,
        config: &Config,
        annotations: &HashMap<String, String>,
        spec_json: &[u8],
    ) -> ttrpc::Result<Arc<dyn Sandbox>> {
        let isolation = config
            .isolation_for(annotations)
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        let mut slot = self.inner.sandbox.lock().await;
        if let Some(sb) = slot.as_ref() {
            if sb.isolation() != isolation {
                return Err(status(
                    Code::INVALID_ARGUMENT,
                    format!(
                        "sandbox {} has isolation {}, the container asks for {isolation}",
                        sb.id(),
                        sb.isolation()
                    ),
                ));
            }
            return Ok(sb.clone());
        }
        let sb = sandbox::start_for(config, isolation, &self.inner.sandbox_id, spec_json)
            .await
            .map_err(|e| status(Code::FAILED_PRECONDITION, e.to_string()))?;
        self.watch_oom(sb.clone());
        *slot = Some(sb.clone());
        Ok(sb)
    }

    async fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> ttrpc::Result<T>,
    ) -> ttrpc::Result<T> {
        let mut containers = self.inner.containers.lock().await;
        let c = containers.get_mut(id).ok_or_else(|| not_found(id, ""))?;
        f(c)
    }

    async fn sandbox_of(&self, id: &str) -> ttrpc::Result<Arc<dyn Sandbox>> {
        self.with_container(id, |c| Ok(c.sandbox.clone())).await
    }

    async fn create_container(&self, req: api::CreateTaskRequest) -> ttrpc::Result<u32> {
        let bundle = PathBuf::from(&req.bundle);
        let spec_json = std::fs::read(bundle.join("config.json")).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("reading {}/config.json: {e}", bundle.display()),
            )
        })?;
        let annotations = options::annotations(&spec_json);
        let cgroup = crate::cgroups::path_of(&spec_json, &req.id);
        let config_path = req.options.as_ref().and_then(options::config_path);
        let config = Config::load(config_path.as_deref())
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        let sb = self.sandbox_for(&config, &annotations, &spec_json).await?;
        let (spec_json, files) = sb
            .prepare_spec(&req.id, spec_json)
            .await
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;

        let rootfs = sb
            .prepare_rootfs(&req.id, &bundle, &req.rootfs)
            .await
            .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        let stdio = Stdio {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut create = agent::CreateContainerRequest::new();
        create.container_id.clone_from(&req.id);
        create.sandbox_id = sb.id().to_owned();
        create.spec_json = spec_json;
        create.files = files;
        match rootfs {
            RootfsSource::Prepared(s) => create.rootfs = Some(s).into(),
            RootfsSource::Layers(l) => create.layers = l,
        }
        create.stdio = Some(stdio.agent_config()).into();
        let created = match sb
            .agent()
            .rpc()
            .create_container(sb.agent().ctx(), &create)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = sb.release_rootfs(&req.id, &bundle).await;
                return Err(agent_err(&format!("create {}", req.id), e));
            }
        };
        let io = match ProcessIo::attach(sb.agent(), &req.id, None, &stdio).await {
            Ok(io) => io,
            Err(e) => {
                remove(&*sb, &req.id).await;
                let _ = sb.release_rootfs(&req.id, &bundle).await;
                return Err(status(Code::INTERNAL, e.to_string()));
            }
        };
        let _ = std::fs::write(
            bundle.join(SANDBOX_FILE),
            sandbox::sandbox_dir(&config, sb.id()).display().to_string(),
        );
        let mut init = Process::new(stdio);
        init.pid = created.pid;
        init.io = Some(io);
        self.inner.containers.lock().await.insert(
            req.id.clone(),
            Container {
                id: req.id.clone(),
                bundle,
                cgroup,
                sandbox: sb,
                init,
                execs: HashMap::new(),
                paused: false,
            },
        );
        Ok(created.pid)
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(status(
                Code::UNIMPLEMENTED,
                "ward does not restore checkpoints",
            ));
        }
        if self.inner.containers.lock().await.contains_key(&req.id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("task {} already exists", req.id),
            ));
        }
        let pid = self.create_container(req.clone()).await?;
        let mut ev = TaskCreate::new();
        ev.container_id.clone_from(&req.id);
        ev.bundle.clone_from(&req.bundle);
        ev.rootfs.clone_from(&req.rootfs);
        let mut tio = containerd_shim::protos::events::task::TaskIO::new();
        tio.stdin.clone_from(&req.stdin);
        tio.stdout.clone_from(&req.stdout);
        tio.stderr.clone_from(&req.stderr);
        tio.terminal = req.terminal;
        ev.io = Some(tio).into();
        ev.pid = pid;
        self.inner.events.publish(ev).await;
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let sb = self.sandbox_of(&req.id).await?;
        let pid = if req.exec_id.is_empty() {
            let r = sb
                .agent()
                .rpc()
                .start_container(sb.agent().ctx(), &container_request(&req.id))
                .await
                .map_err(|e| agent_err(&format!("start {}", req.id), e))?;
            self.with_container(&req.id, |c| {
                c.init.started = true;
                c.init.pid = r.pid;
                Ok(())
            })
            .await?;
            self.watch_exit(sb, req.id.clone(), String::new(), r.pid);
            let mut ev = TaskStart::new();
            ev.container_id.clone_from(&req.id);
            ev.pid = r.pid;
            self.inner.events.publish(ev).await;
            r.pid
        } else {
            let (spec, stdio) = self
                .with_container(&req.id, |c| {
                    let p = c
                        .execs
                        .get(&req.exec_id)
                        .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                    let spec = p.exec_spec.clone().ok_or_else(|| {
                        status(
                            Code::FAILED_PRECONDITION,
                            format!("exec {} of task {} already started", req.exec_id, req.id),
                        )
                    })?;
                    Ok((spec, p.stdio.clone()))
                })
                .await?;
            let mut exec = agent::ExecProcessRequest::new();
            exec.container_id.clone_from(&req.id);
            exec.exec_id.clone_from(&req.exec_id);
            exec.process_json = spec;
            exec.stdio = Some(stdio.agent_config()).into();
            let r = sb
                .agent()
                .rpc()
                .exec_process(sb.agent().ctx(), &exec)
                .await
                .map_err(|e| agent_err(&format!("exec {} in {}", req.exec_id, req.id), e))?;
            let io = ProcessIo::attach(sb.agent(), &req.id, Some(&req.exec_id), &stdio)
                .await
                .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
            self.with_container(&req.id, |c| {
                if let Some(p) = c.execs.get_mut(&req.exec_id) {
                    p.started = true;
                    p.pid = r.pid;
                    p.exec_spec = None;
                    p.io = Some(io);
                }
                Ok(())
            })
            .await?;
            self.watch_exit(sb, req.id.clone(), req.exec_id.clone(), r.pid);
            let mut ev = TaskExecStarted::new();
            ev.container_id.clone_from(&req.id);
            ev.exec_id.clone_from(&req.exec_id);
            ev.pid = r.pid;
            self.inner.events.publish(ev).await;
            r.pid
        };
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        self.with_container(&req.id, |c| {
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            let mut resp = api::StateResponse::new();
            resp.id.clone_from(&req.id);
            resp.exec_id.clone_from(&req.exec_id);
            resp.bundle = c.bundle.display().to_string();
            resp.pid = p.pid;
            resp.status = p.status(c.paused).into();
            resp.stdin.clone_from(&p.stdio.stdin);
            resp.stdout.clone_from(&p.stdio.stdout);
            resp.stderr.clone_from(&p.stdio.stderr);
            resp.terminal = p.stdio.terminal;
            if let Some(exit) = p.exited() {
                resp.exit_status = exit.status;
                resp.exited_at = Some(exit.at).into();
            }
            Ok(resp)
        })
        .await
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let p = self
                .with_container(&req.id, |c| {
                    let running = c
                        .execs
                        .get(&req.exec_id)
                        .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                    if running.started && running.exited().is_none() {
                        return Err(status(
                            Code::FAILED_PRECONDITION,
                            format!("exec {} of task {} is still running", req.exec_id, req.id),
                        ));
                    }
                    Ok(c.execs.remove(&req.exec_id))
                })
                .await?;
            let mut resp = api::DeleteResponse::new();
            if let Some(p) = p {
                resp.pid = p.pid;
                let exit = p.exited().unwrap_or(Exit {
                    status: 0,
                    at: now(),
                });
                resp.exit_status = exit.status;
                resp.exited_at = Some(exit.at).into();
            }
            return Ok(resp);
        }

        let (sb, bundle, running) = self
            .with_container(&req.id, |c| {
                Ok((
                    c.sandbox.clone(),
                    c.bundle.clone(),
                    c.init.started && c.init.exited().is_none(),
                ))
            })
            .await?;
        if running {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("task {} is still running", req.id),
            ));
        }
        if sb.alive() {
            remove(&*sb, &req.id).await;
        } else {
            sweep_cgroup(&self.inner, &req.id).await;
        }
        if let Err(e) = sb.release_rootfs(&req.id, &bundle).await {
            log::warn!("{e}");
        }
        let _ = std::fs::remove_file(bundle.join(SANDBOX_FILE));
        let c = self.inner.containers.lock().await.remove(&req.id);
        self.inner.oom_reported.lock().await.remove(&req.id);
        let Some(mut c) = c else {
            return Err(not_found(&req.id, ""));
        };
        if let Some(io) = c.init.io.as_mut() {
            io.abort();
        }
        let exit = c.init.exited().unwrap_or(Exit {
            status: 0,
            at: now(),
        });
        let mut ev = TaskDelete::new();
        ev.container_id.clone_from(&req.id);
        ev.id.clone_from(&req.id);
        ev.pid = c.init.pid;
        ev.exit_status = exit.status;
        ev.exited_at = Some(exit.at.clone()).into();
        self.inner.events.publish(ev).await;
        let mut resp = api::DeleteResponse::new();
        resp.pid = c.init.pid;
        resp.exit_status = exit.status;
        resp.exited_at = Some(exit.at).into();
        Ok(resp)
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> ttrpc::Result<api::PidsResponse> {
        let sb = self.sandbox_of(&req.id).await?;
        let r = sb
            .agent()
            .rpc()
            .list_processes(sb.agent().ctx(), &container_request(&req.id))
            .await
            .map_err(|e| agent_err(&format!("pids of {}", req.id), e))?;
        let mut resp = api::PidsResponse::new();
        resp.processes = r
            .pids
            .into_iter()
            .map(|pid| {
                let mut p = ProcessInfo::new();
                p.pid = pid;
                p
            })
            .collect();
        Ok(resp)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        let sb = self.sandbox_of(&req.id).await?;
        sb.agent()
            .rpc()
            .pause_container(sb.agent().ctx(), &container_request(&req.id))
            .await
            .map_err(|e| agent_err(&format!("pause {}", req.id), e))?;
        self.with_container(&req.id, |c| {
            c.paused = true;
            Ok(())
        })
        .await?;
        let mut ev = TaskPaused::new();
        ev.container_id.clone_from(&req.id);
        self.inner.events.publish(ev).await;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        let sb = self.sandbox_of(&req.id).await?;
        sb.agent()
            .rpc()
            .resume_container(sb.agent().ctx(), &container_request(&req.id))
            .await
            .map_err(|e| agent_err(&format!("resume {}", req.id), e))?;
        self.with_container(&req.id, |c| {
            c.paused = false;
            Ok(())
        })
        .await?;
        let mut ev = TaskResumed::new();
        ev.container_id.clone_from(&req.id);
        self.inner.events.publish(ev).await;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        Err(status(
            Code::UNIMPLEMENTED,
            "checkpoint is not implemented by ward",
        ))
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        let sb = self.sandbox_of(&req.id).await?;
        let mut r = agent::SignalProcessRequest::new();
        r.container_id.clone_from(&req.id);
        r.exec_id.clone_from(&req.exec_id);
        r.signal = req.signal;
        r.all = req.all;
        sb.agent()
            .rpc()
            .signal_process(sb.agent().ctx(), &r)
            .await
            .map_err(|e| agent_err(&format!("kill {} {}", req.id, req.exec_id), e))?;
        Ok(Empty::new())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let spec = req
            .spec
            .as_ref()
            .map(|a: &Any| a.value.clone())
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        self.with_container(&req.id, |c| {
            if c.execs.contains_key(&req.exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {} of task {} already exists", req.exec_id, req.id),
                ));
            }
            if c.init.exited().is_some() {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("task {} has exited", req.id),
                ));
            }
            let mut p = Process::new(Stdio {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            });
            p.exec_spec = Some(spec);
            c.execs.insert(req.exec_id.clone(), p);
            Ok(())
        })
        .await?;
        let mut ev = TaskExecAdded::new();
        ev.container_id.clone_from(&req.id);
        ev.exec_id.clone_from(&req.exec_id);
        self.inner.events.publish(ev).await;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<Empty> {
        let sb = self.sandbox_of(&req.id).await?;
        let mut r = agent::ResizePtyRequest::new();
        r.container_id.clone_from(&req.id);
        r.exec_id.clone_from(&req.exec_id);
        r.rows = req.height;
        r.cols = req.width;
        sb.agent()
            .rpc()
            .resize_pty(sb.agent().ctx(), &r)
            .await
            .map_err(|e| agent_err(&format!("resize pty of {} {}", req.id, req.exec_id), e))?;
        Ok(Empty::new())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> ttrpc::Result<Empty> {
        if req.stdin {
            self.with_container(&req.id, |c| {
                let p = c
                    .process_mut(&req.exec_id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                if let Some(io) = p.io.as_mut() {
                    io.close_stdin();
                }
                Ok(())
            })
            .await?;
        }
        Ok(Empty::new())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<Empty> {
        let sb = self.sandbox_of(&req.id).await?;
        let mut r = agent::UpdateContainerRequest::new();
        r.container_id.clone_from(&req.id);
        r.resources_json = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        sb.agent()
            .rpc()
            .update_container(sb.agent().ctx(), &r)
            .await
            .map_err(|e| agent_err(&format!("update {}", req.id), e))?;
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        let mut rx = self
            .with_container(&req.id, |c| {
                c.process(&req.exec_id)
                    .map(|p| p.exit.subscribe())
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))
            })
            .await?;
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| status(Code::NOT_FOUND, format!("task {} was deleted", req.id)))?
            .clone()
            .unwrap_or(Exit {
                status: 255,
                at: now(),
            });
        let mut resp = api::WaitResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = Some(exit.at).into();
        Ok(resp)
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        let sb = self.sandbox_of(&req.id).await?;
        let s = sb
            .agent()
            .rpc()
            .stats_container(sb.agent().ctx(), &container_request(&req.id))
            .await
            .map_err(|e| agent_err(&format!("stats of {}", req.id), e))?;
        let any = metrics::to_any(&s).map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        let mut resp = api::StatsResponse::new();
        resp.stats = Some(any).into();
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = self
            .with_container(&req.id, |c| Ok(c.init.pid))
            .await
            .unwrap_or(0);
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = task_pid;
        env!("CARGO_PKG_VERSION").clone_into(&mut resp.version);
        Ok(resp)
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> ttrpc::Result<Empty> {
        // containerd asks after every task's delete; the sandbox lives while tasks remain.
        if !self.inner.containers.lock().await.is_empty() {
            return Ok(Empty::new());
        }
        let sb = self.inner.sandbox.lock().await.take();
        if let Some(sb) = sb {
            sb.shutdown().await;
        }
        self.inner.exit.signal();
        Ok(Empty::new())
    }
}

/// What a dead host agent left of container `id`: its processes and cgroup. (A VM's
/// containers died with it.)
pub(super) async fn sweep_cgroup(inner: &Inner, id: &str) {
    let path = inner
        .containers
        .lock()
        .await
        .get(id)
        .filter(|c| c.sandbox.isolation() == crate::config::Isolation::Shared)
        .map(|c| c.cgroup.clone());
    if let Some(path) = path {
        let left = tokio::task::spawn_blocking(move || crate::cgroups::kill_and_remove(&path))
            .await
            .unwrap_or_default();
        if !left.is_empty() {
            log::warn!("container {id}: cgroups left after the agent died: {left:?}");
        }
    }
}

/// Used by `shim delete`: what a crashed shim left for the bundle in the current directory.
pub fn sandbox_dir_of_bundle(bundle: &Path) -> Option<PathBuf> {
    std::fs::read_to_string(bundle.join(SANDBOX_FILE))
        .ok()
        .map(|s| PathBuf::from(s.trim()))
}
