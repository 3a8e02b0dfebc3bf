//! `ward run`: in the foreground (stdio wired to ours, signals forwarded, the container's
//! exit code as ours) or detached (`-d`: a supervisor process owns the sandbox).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use super::launch::{Launch, Running, launch, random_id, validate_id};
use super::spec::{Bind, parse_cpus, parse_memory, parse_pids};
use super::state::{self, State, Status};
use super::{CliError, SUPERVISE_ARG, nest, tty};
use crate::config::{Config, Isolation};
use crate::image::ImageRef;

/// How long output may keep flowing after the container exited (a daemonized child holding
/// stdout) before `ward run` stops copying it, as the shim does.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How long `ward run -d` waits for its supervisor to report the container started.
const DETACH_WAIT: Duration = Duration::from_secs(300);

/// `ward run` flags.
#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunArgs {
    /// vm (a microVM per container) or shared (the host kernel, like runc); default: the
    /// config's isolation.
    #[arg(long)]
    pub isolation: Option<String>,
    /// CPU limit, e.g. 0.5 or 2.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory limit: bytes, or with a unit: 64m, 1g.
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// Most processes the container may have (its pids cgroup limit).
    #[arg(long)]
    pub pids_limit: Option<String>,
    /// Remove the container's state when it exits (detached containers).
    #[arg(long)]
    pub rm: bool,
    /// Allocate a pseudo-terminal (implies -i).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Keep stdin attached.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Run in the background; `ward ps`, `logs`, `stop`, `rm` manage it.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Container name (default: ward-<random hex>).
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable K=V (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Bind mount SRC:DST[:ro] (repeatable).
    #[arg(long = "volume", short = 'v', value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// ward config file (default /etc/ward/config.toml, as the shim).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An OCI image archive, an OCI layout directory, or `demo`.
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Checks every flag and builds the launch, before anything is created.
pub fn prepare(args: &RunArgs) -> Result<(Config, Launch), CliError> {
    let config = Config::load(args.config.as_deref())?;
    let isolation = match &args.isolation {
        Some(s) => s.parse::<Isolation>()?,
        None => config.isolation,
    };
    let id = args.name.clone().unwrap_or_else(random_id);
    validate_id(&id)?;
    for kv in &args.env {
        if kv.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(CliError::Usage {
                what: "environment variable (-e)",
                value: kv.clone(),
                why: "want K=V".into(),
            });
        }
    }
    let image = ImageRef::parse(&args.image);
    if let ImageRef::Path(p) = &image {
        if !p.exists() {
            return Err(CliError::Usage {
                what: "image",
                value: args.image.clone(),
                why: "no such file or directory (want an OCI archive, an OCI layout directory, or demo)".into(),
            });
        }
    }
    let mut launch = Launch::new(&id, image, isolation);
    launch.args.clone_from(&args.command);
    launch.env.clone_from(&args.env);
    launch.cpus = args.cpus.as_deref().map(parse_cpus).transpose()?;
    launch.memory = args.memory.as_deref().map(parse_memory).transpose()?;
    launch.pids = args.pids_limit.as_deref().map(parse_pids).transpose()?;
    launch.binds = args
        .volumes
        .iter()
        .map(|v| v.parse::<Bind>())
        .collect::<Result<_, _>>()?;
    if let Some(b) = launch.binds.iter().find(|b| !b.source.exists()) {
        return Err(CliError::Usage {
            what: "bind mount (-v) source",
            value: b.source.display().to_string(),
            why: "no such file or directory".into(),
        });
    }
    launch.tty = args.tty;
    launch.stdin = args.interactive || args.tty;
    Ok((config, launch))
}

/// `ward run`: the container's exit code (foreground), or 0 once a detached one started.
pub fn run(args: &RunArgs) -> Result<i32, CliError> {
    let (config, launch) = prepare(args)?;
    if launch.isolation == Isolation::Vm && nest::needed() {
        return nest::rerun(args);
    }
    if args.detach {
        return detach(args, &config, &launch);
    }
    let rt = runtime()?;
    let code = rt.block_on(foreground(&launch, &config));
    // The stdin copy blocks in a read of our stdin that only the user can end.
    rt.shutdown_background();
    code
}

/// A current-thread runtime: the agent's PR_SET_PDEATHSIG follows the thread that spawned
/// it, which must live as long as we do.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "starting the async runtime".into(),
            source,
        })
}

/// Copies `from` to `to` until EOF.
pub(super) fn copy_out<R, W>(mut from: R, mut to: W) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = match tokio::io::AsyncReadExt::read(&mut from, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Written and flushed at once: a terminal (or a log) shows output as it comes.
            if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                break;
            }
        }
        let _ = to.flush().await;
    })
}

/// Waits (at most [`DRAIN_LIMIT`]) for the output copies to reach EOF.
pub(super) async fn drain(outputs: Vec<JoinHandle<()>>) {
    let aborts: Vec<_> = outputs.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        for o in outputs {
            let _ = o.await;
        }
    };
    if tokio::time::timeout(DRAIN_LIMIT, all).await.is_err() {
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// The signals `ward run` and the supervisor forward to the container. Installed before
/// the launch, so one that arrives meanwhile is held (not fatal: that would leave the
/// sandbox behind) and forwarded once the container runs.
pub(super) struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
    usr1: Signal,
    winch: Signal,
}

impl Signals {
    pub(super) fn install() -> Result<Self, CliError> {
        let sig = |k: SignalKind| {
            signal(k).map_err(|source| CliError::Io {
                what: "installing signal handlers".into(),
                source,
            })
        };
        Ok(Self {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
            hup: sig(SignalKind::hangup())?,
            quit: sig(SignalKind::quit())?,
            usr1: sig(SignalKind::user_defined1())?,
            winch: sig(SignalKind::window_change())?,
        })
    }
}

/// Waits for the container, forwarding SIGINT, SIGTERM, SIGHUP and SIGQUIT to it (and
/// SIGUSR1 as SIGKILL: `ward stop` after its grace), and SIGWINCH as a resize when `tty`.
pub(super) async fn wait_forwarding(
    running: &Running,
    signals: &mut Signals,
    tty: bool,
) -> Result<i32, CliError> {
    let wait = running.wait();
    tokio::pin!(wait);
    loop {
        let forward = tokio::select! {
            r = &mut wait => return Ok(r?),
            _ = signals.int.recv() => libc::SIGINT,
            _ = signals.term.recv() => libc::SIGTERM,
            _ = signals.hup.recv() => libc::SIGHUP,
            _ = signals.quit.recv() => libc::SIGQUIT,
            _ = signals.usr1.recv() => libc::SIGKILL,
            _ = signals.winch.recv() => {
                if let (true, Some((rows, cols))) = (tty, tty::size()) {
                    let _ = running.resize(rows, cols).await;
                }
                continue;
            }
        };
        if let Err(e) = running.signal(forward).await {
            log::debug!("forwarding signal {forward}: {e}");
        }
    }
}

async fn foreground(launch_spec: &Launch, config: &Config) -> Result<i32, CliError> {
    let mut signals = Signals::install()?;
    let mut running = launch(launch_spec, config).await?;
    let raw = if launch_spec.tty {
        tty::RawMode::enter()
    } else {
        None
    };
    if launch_spec.tty {
        if let Some((rows, cols)) = tty::size() {
            let _ = running.resize(rows, cols).await;
        }
    }
    let mut outputs = Vec::new();
    if let Some(out) = running.take_stdout() {
        outputs.push(copy_out(out, tokio::io::stdout()));
    }
    if let Some(err) = running.take_stderr() {
        outputs.push(copy_out(err, tokio::io::stderr()));
    }
    if let Some(mut to) = running.take_stdin() {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to).await;
            // EOF for the container.
            let _ = to.shutdown().await;
        });
    }
    let code = wait_forwarding(&running, &mut signals, launch_spec.tty).await;
    drain(outputs).await;
    drop(raw);
    running.teardown().await;
    code
}

/// Starts the supervisor for a detached container and waits until it reports the
/// container running (prints its id) or failed (its error, nothing left behind).
fn detach(args: &RunArgs, config: &Config, launch: &Launch) -> Result<i32, CliError> {
    let dir = state::dir(config, &launch.id);
    std::fs::create_dir_all(state::root(config)).map_err(|source| CliError::State {
        path: state::root(config),
        source,
    })?;
    if let Err(source) = std::fs::create_dir(&dir) {
        return Err(if source.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::Usage {
                what: "container name",
                value: launch.id.clone(),
                why: format!(
                    "already in use ({} exists; ward rm it first)",
                    dir.display()
                ),
            }
        } else {
            CliError::State { path: dir, source }
        });
    }
    let result = start_supervisor(args, launch, &dir);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn start_supervisor(
    args: &RunArgs,
    launch: &Launch,
    dir: &std::path::Path,
) -> Result<i32, CliError> {
    let mut args = args.clone();
    args.name = Some(launch.id.clone());
    // The supervisor runs elsewhere (cwd /): a relative config path would not resolve.
    args.config = args
        .config
        .as_ref()
        .map(|c| std::fs::canonicalize(c).unwrap_or_else(|_| c.clone()));
    if let crate::image::ImageRef::Path(p) = &launch.image {
        args.image = std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string();
    }
    state::write_json(dir, "launch.json", &args)?;
    let st = State {
        id: launch.id.clone(),
        image: args.image.clone(),
        isolation: launch.isolation.to_string(),
        command: args.command.clone(),
        status: Status::Created,
        exit_code: None,
        created: state::now(),
        pid: 0,
        container_pid: 0,
        error: None,
    };
    st.save(dir)?;
    let log_path = dir.join("log");
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| CliError::Io { what, source }
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&format!("creating {}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(io("finding the ward executable"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(SUPERVISE_ARG).arg(dir).current_dir("/");
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io("duplicating the log fd"))?)
        .stderr(log);
    // SAFETY: runs in the forked child before exec and only calls setsid(2), which is
    // async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io("starting the supervisor"))?;
    let deadline = std::time::Instant::now() + DETACH_WAIT;
    loop {
        // With --rm, a container that exits at once may be gone (state and all) before we
        // look: it ran.
        if args.rm && !dir.join("state.json").exists() {
            println!("{}", launch.id);
            std::mem::forget(child);
            return Ok(0);
        }
        let now = State::load(dir)?;
        match now.status {
            Status::Running | Status::Exited => {
                println!("{}", launch.id);
                // Reaped by nobody but init once we exit: the supervisor is its own session.
                std::mem::forget(child);
                return Ok(0);
            }
            Status::Failed => {
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(dir);
                return Err(CliError::Detached(now.error.unwrap_or_default()));
            }
            Status::Created => {}
        }
        if let Ok(Some(_)) = child.try_wait() {
            // It may have written its final state just before exiting.
            if State::load(dir)?.status != Status::Created {
                continue;
            }
            return Err(CliError::SupervisorDied {
                id: launch.id.clone(),
                log: log_path,
            });
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError::SupervisorDied {
                id: launch.id.clone(),
                log: log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
