//! The launch library: one container in its own sandbox, without containerd, through the
//! same code the shim uses (`sandbox::start` → `prepare_rootfs` with a synthesized overlay
//! mount → agent CreateContainer → stdio streams → StartContainer → WaitProcess →
//! RemoveContainer → `release_rootfs` → `Sandbox::shutdown`). `ward run` and `ward compare`
//! are built on it.
//!
//! Host state of a launch: the sandbox dir `<run_dir>/<id>/` (the sandbox's own) and the
//! bundle `<run_dir>/bundles/<id>/` (`rootfs/` mount point, overlay `upper/` and `work/`).
//! Both are gone after [`Running::teardown`] and after every failed [`launch`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::Mount;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use ward_agent::protocol::agent;
use ward_agent::protocol::stream::{StreamHeader, StreamKind};

use super::spec::{self, Bind};
use crate::config::{Config, Isolation};
use crate::image::{self, Image, ImageError, ImageRef};
use crate::sandbox::{self, RootfsSource, Sandbox, SandboxError};

/// One stdio stream of the container (raw bytes; EOF when the process closed it).
pub type Stream = BufReader<UnixStream>;

/// Directories under the run dir that are not sandboxes, so no container may take the name.
pub const RESERVED_IDS: &[&str] = &["bundles", "cli"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub image: ImageRef,
    pub isolation: Isolation,
    /// Container and sandbox id (`[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 characters).
    pub id: String,
    /// Replaces the image's Cmd (the entrypoint stays), as `docker run IMAGE ARGS…`.
    pub args: Vec<String>,
    /// `K=V`, laid over the image's env.
    pub env: Vec<String>,
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Most processes (and threads) the container may have.
    pub pids: Option<i64>,
    pub binds: Vec<Bind>,
    /// A pseudo-terminal as the process's stdio (stdout and stderr both on it).
    pub tty: bool,
    /// Attach a stdin stream.
    pub stdin: bool,
}

impl Launch {
    /// `image` in `isolation` with the image's own command and no limits.
    pub fn new(id: &str, image: ImageRef, isolation: Isolation) -> Self {
        Self {
            image,
            isolation,
            id: id.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cpus: None,
            memory: None,
            pids: None,
            binds: Vec::new(),
            tty: false,
            stdin: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("image {image} has no command: give one after the image")]
    NoCommand { image: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("container {id} already exists ({path} is there)")]
    Exists { id: String, path: PathBuf },
    #[error("container {id}: {path}: {source}")]
    State {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("container {id}: agent {call}: {why}")]
    Agent {
        id: String,
        call: &'static str,
        why: String,
    },
    #[error("container {id}: opening its {kind:?} stream: {source}")]
    Stream {
        id: String,
        kind: StreamKind,
        source: ward_agent::client::ClientError,
    },
    #[error("container {id}: {why}")]
    Internal { id: String, why: String },
}

/// When each step of the launch finished, from the start of [`launch`].
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub began: Instant,
    pub image_loaded: Duration,
    pub sandbox_started: Duration,
    pub created: Duration,
    pub started: Duration,
}

/// The bundle of container `id`: `<run_dir>/bundles/<id>`.
pub fn bundle_dir(config: &Config, id: &str) -> PathBuf {
    config.run_dir.join("bundles").join(id)
}

/// Checks a container name: it names directories and cgroups.
pub fn validate_id(id: &str) -> Result<(), LaunchError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !RESERVED_IDS.contains(&id);
    if ok {
        Ok(())
    } else {
        Err(LaunchError::Invalid {
            what: "container name",
            value: id.to_owned(),
            why: "want 1-64 of [A-Za-z0-9_.-], starting with a letter or digit (not \"bundles\" or \"cli\")".into(),
        })
    }
}

/// A fresh id: `ward-` and 12 hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    bytes[0] ^= nanos as u8;
    bytes[1] ^= (std::process::id() & 0xff) as u8;
    bytes.iter().fold(String::from("ward-"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Where image layers are unpacked: the config's `[vm] cache_dir` (the cache of layer
/// images too), else `$WARD_CACHE`.
fn cache_dir(config: &Config) -> Option<PathBuf> {
    config.vm.cache_dir.clone()
}

/// Starts the sandbox, sized (a VM) for the container's spec, as the shim does.
async fn start_sandbox(
    config: &Config,
    isolation: Isolation,
    id: &str,
    spec_json: &[u8],
) -> Result<Arc<dyn Sandbox>, SandboxError> {
    sandbox::start_for(config, isolation, id, spec_json).await
}

/// A created and started container in its sandbox. Call [`Running::teardown`] when done:
/// host state is only removed there.
#[derive(Debug)]
pub struct Running {
    id: String,
    sandbox: Arc<dyn Sandbox>,
    bundle: PathBuf,
    pid: u32,
    command: Vec<String>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    timings: Timings,
}

/// Loads the image, starts a sandbox and creates and starts the container in it. On error
/// everything made so far is removed.
pub async fn launch(l: &Launch, config: &Config) -> Result<Running, LaunchError> {
    let began = Instant::now();
    validate_id(&l.id)?;
    let image = {
        let r = l.image.clone();
        let cache = cache_dir(config);
        tokio::task::spawn_blocking(move || image::load(&r, cache.as_deref()))
            .await
            .map_err(|e| LaunchError::Internal {
                id: l.id.clone(),
                why: format!("loading the image: {e}"),
            })??
    };
    let image_loaded = began.elapsed();
    let spec_json =
        serde_json::to_vec(&spec::runtime_spec(l, &image)?).map_err(|e| LaunchError::Internal {
            id: l.id.clone(),
            why: format!("runtime spec: {e}"),
        })?;

    let bundle = bundle_dir(config, &l.id);
    for taken in [sandbox::sandbox_dir(config, &l.id), bundle.clone()] {
        if taken.exists() {
            return Err(LaunchError::Exists {
                id: l.id.clone(),
                path: taken,
            });
        }
    }
    for d in ["upper", "work"] {
        let p = bundle.join(d);
        if let Err(source) = std::fs::create_dir_all(&p) {
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(LaunchError::State {
                id: l.id.clone(),
                path: p,
                source,
            });
        }
    }
    let sb = match start_sandbox(config, l.isolation, &l.id, &spec_json).await {
        Ok(sb) => sb,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(e.into());
        }
    };
    let sandbox_started = began.elapsed();
    let mut running = Running {
        id: l.id.clone(),
        sandbox: sb,
        bundle,
        pid: 0,
        command: spec::command(&image, &l.args),
        stdin: None,
        stdout: None,
        stderr: None,
        timings: Timings {
            began,
            image_loaded,
            sandbox_started,
            created: Duration::ZERO,
            started: Duration::ZERO,
        },
    };
    match running.create_and_start(l, &image, spec_json).await {
        Ok(()) => Ok(running),
        Err(e) => {
            running.teardown().await;
            Err(e)
        }
    }
}

/// containerd's overlay mount for `layers` (bottom first) under the bundle's upper/work.
fn overlay_mount(layers: &[PathBuf], bundle: &Path) -> Mount {
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let mut m = Mount::new();
    m.type_ = "overlay".into();
    m.source = "overlay".into();
    m.options = vec![
        format!("lowerdir={}", lower.join(":")),
        format!("upperdir={}", bundle.join("upper").display()),
        format!("workdir={}", bundle.join("work").display()),
    ];
    m
}

impl Running {
    async fn create_and_start(
        &mut self,
        l: &Launch,
        image: &Image,
        spec_json: Vec<u8>,
    ) -> Result<(), LaunchError> {
        let sb = self.sandbox.clone();
        // The shim's order: the spec adapted to where the agent runs (vm: files copied in),
        // then the rootfs.
        let (spec_json, files) = sb.prepare_spec(&self.id, spec_json).await?;
        let rootfs = sb
            .prepare_rootfs(
                &self.id,
                &self.bundle,
                &[overlay_mount(&image.layers, &self.bundle)],
            )
            .await?;
        let mut create = agent::CreateContainerRequest::new();
        create.container_id.clone_from(&self.id);
        create.sandbox_id = sb.id().to_owned();
        create.spec_json = spec_json;
        create.files = files;
        match rootfs {
            RootfsSource::Prepared(s) => create.rootfs = Some(s).into(),
            RootfsSource::Layers(l) => create.layers = l,
        }
        let mut stdio = agent::StdioConfig::new();
        stdio.terminal = l.tty;
        stdio.stdin = l.stdin;
        stdio.stdout = true;
        stdio.stderr = !l.tty;
        create.stdio = Some(stdio.clone()).into();
        let created = sb
            .agent()
            .rpc()
            .create_container(sb.agent().ctx(), &create)
            .await
            .map_err(|source| self.agent_err("CreateContainer", source))?;
        self.pid = created.pid;
        self.timings.created = self.timings.began.elapsed();

        self.stdout = Some(self.open(StreamKind::Stdout).await?);
        if stdio.stderr {
            self.stderr = Some(self.open(StreamKind::Stderr).await?);
        }
        if stdio.stdin {
            self.stdin = Some(self.open(StreamKind::Stdin).await?);
        }
        let started = sb
            .agent()
            .rpc()
            .start_container(sb.agent().ctx(), &container_request(&self.id))
            .await
            .map_err(|source| self.agent_err("StartContainer", source))?;
        self.pid = started.pid;
        self.timings.started = self.timings.began.elapsed();
        Ok(())
    }

    async fn open(&self, kind: StreamKind) -> Result<Stream, LaunchError> {
        let header = StreamHeader {
            container_id: self.id.clone(),
            exec_id: None,
            kind,
        };
        self.sandbox
            .agent()
            .open_stream(&header)
            .await
            .map_err(|source| LaunchError::Stream {
                id: self.id.clone(),
                kind,
                source,
            })
    }

    fn agent_err(&self, call: &'static str, source: ttrpc::Error) -> LaunchError {
        LaunchError::Agent {
            id: self.id.clone(),
            call,
            why: rpc_message(source),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's init pid as the agent sees it (the host pid in shared isolation).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container's argv: the image's entrypoint and the given args (or its cmd).
    pub fn command(&self) -> &[String] {
        &self.command
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The container's stdout (with a terminal: the terminal, stderr included).
    pub fn take_stdout(&mut self) -> Option<Stream> {
        self.stdout.take()
    }

    /// The container's stderr; `None` with a terminal.
    pub fn take_stderr(&mut self) -> Option<Stream> {
        self.stderr.take()
    }

    /// The container's stdin when [`Launch::stdin`] asked for it; shut it down (or drop
    /// it) for EOF.
    pub fn take_stdin(&mut self) -> Option<Stream> {
        self.stdin.take()
    }

    /// Host pids of everything the sandbox runs on the host: the agent or the VMM and all
    /// their descendants (in shared isolation, the container's processes).
    pub fn sandbox_pids(&self) -> Vec<u32> {
        descendants(&self.sandbox.host_pids())
    }

    /// Sends `signal` to the container's init process.
    pub async fn signal(&self, signal: i32) -> Result<(), LaunchError> {
        let mut r = agent::SignalProcessRequest::new();
        r.container_id.clone_from(&self.id);
        r.signal = signal as u32;
        self.sandbox
            .agent()
            .rpc()
            .signal_process(self.sandbox.agent().ctx(), &r)
            .await
            .map(|_| ())
            .map_err(|source| self.agent_err("SignalProcess", source))
    }

    /// Resizes the container's terminal.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), LaunchError> {
        let mut r = agent::ResizePtyRequest::new();
        r.container_id.clone_from(&self.id);
        r.rows = u32::from(rows);
        r.cols = u32::from(cols);
        self.sandbox
            .agent()
            .rpc()
            .resize_pty(self.sandbox.agent().ctx(), &r)
            .await
            .map(|_| ())
            .map_err(|source| self.agent_err("ResizePty", source))
    }

    /// Waits for the container's init to exit: its exit code, 128 + N when signal N
    /// killed it.
    pub async fn wait(&self) -> Result<i32, LaunchError> {
        let mut req = agent::ProcessRequest::new();
        req.container_id.clone_from(&self.id);
        self.sandbox
            .agent()
            .rpc()
            .wait_process(ttrpc::context::Context::default(), &req)
            .await
            .map(|r| r.exit_status)
            .map_err(|source| self.agent_err("WaitProcess", source))
    }

    /// Removes the container (killing what still runs), unmounts its rootfs, removes the
    /// bundle and shuts the sandbox down. Problems are logged: teardown always finishes.
    pub async fn teardown(mut self) {
        // The agent finishes a process's streams before it lets the container go.
        drop((self.stdin.take(), self.stdout.take(), self.stderr.take()));
        let sb = &self.sandbox;
        if sb.alive() {
            let mut req = agent::RemoveContainerRequest::new();
            req.container_id.clone_from(&self.id);
            let mut ctx = sb.agent().ctx();
            ctx.timeout_nano = Duration::from_secs(30).as_nanos() as i64;
            if let Err(e) = sb.agent().rpc().remove_container(ctx, &req).await {
                // Not created yet (a failed launch) is not a problem.
                log::debug!("container {}: RemoveContainer: {e}", self.id);
            }
        }
        let released = sb.release_rootfs(&self.id, &self.bundle).await;
        match released {
            // Only an unmounted rootfs may be removed recursively.
            Ok(()) => {
                if let Err(e) = std::fs::remove_dir_all(&self.bundle) {
                    log::warn!(
                        "container {}: removing {}: {e}",
                        self.id,
                        self.bundle.display()
                    );
                }
            }
            Err(e) => log::warn!("{e}"),
        }
        sb.shutdown().await;
    }
}

/// The agent's own message for a status error (it names the container already).
fn rpc_message(e: ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

fn container_request(id: &str) -> agent::ContainerRequest {
    let mut r = agent::ContainerRequest::new();
    id.clone_into(&mut r.container_id);
    r
}

/// `roots` (those alive) and every process descending from them.
fn descendants(roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces and parens.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|r| parents.iter().any(|(p, _)| p == r))
        .collect();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "web-1", "x.y_z", &random_id()] {
            validate_id(good).unwrap();
        }
        for bad in ["", "-a", "a/b", "..", "cli", "bundles", &"a".repeat(65)] {
            let err = validate_id(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_overlay_lists_the_top_layer_first() {
        let m = overlay_mount(&["/l/bottom".into(), "/l/top".into()], Path::new("/b"));
        assert_eq!(m.type_, "overlay");
        assert_eq!(
            m.options,
            [
                "lowerdir=/l/top:/l/bottom",
                "upperdir=/b/upper",
                "workdir=/b/work"
            ]
        );
    }

    #[test]
    fn descendants_include_children() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pids = descendants(&[me]);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pids[0], me);
        assert!(pids.contains(&child.id()));
        assert!(descendants(&[u32::MAX]).is_empty());
    }
}
