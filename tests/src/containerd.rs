//! A real containerd (Debian's) started for one test, with its own root, state, socket and
//! config, and `ctr` bound to it. Dropping it deletes the tasks and containers it ran, stops
//! containerd and any shim it left, unmounts what was mounted under its root and removes it.
//!
//! Every instance has its own namespace too: runc keeps its state in
//! `/run/containerd/runc/<namespace>` whatever containerd's root, so two instances sharing a
//! namespace would see each other's containers.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a `ctr` command may run before the harness kills it.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const RUNC_STATE: &str = "/run/containerd/runc";

/// A runtime entry for the CRI plugin's config (`ctr --runtime` finds
/// `containerd-shim-<name>-<version>` on PATH without one).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The key under `runtimes`, e.g. `ward`.
    pub name: String,
    /// e.g. `io.containerd.ward.v2`.
    pub runtime_type: String,
    /// TOML lines for the runtime's `options` table (may be empty).
    pub options: String,
}

/// How to start containerd.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Runtimes besides runc (`io.containerd.runc.v2`, always present).
    pub runtimes: Vec<Runtime>,
    /// Directories put in front of PATH, where containerd looks for shim binaries.
    pub path_dirs: Vec<PathBuf>,
    /// Keep the CRI plugin (off by default: it is slow to start and not needed by `ctr`).
    pub cri: bool,
    /// Raw TOML appended to the generated config.
    pub extra_config: String,
    /// Environment of containerd, which its shims inherit (e.g. `WARD_CONFIG`).
    pub env: Vec<(String, String)>,
}

/// A running containerd owned by a test.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    namespace: String,
    child: Option<Child>,
    path_env: String,
}

impl Containerd {
    /// Starts containerd for the test `label` and waits until it answers `ctr version`.
    pub fn start(label: &str, opts: &Options) -> anyhow::Result<Self> {
        static INSTANCE: AtomicU32 = AtomicU32::new(0);
        let clean: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let seq = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("ward-{clean}-{}-{seq}", std::process::id());
        // Short path: the socket must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix(&format!("ward-ctrd-{clean}-"))
            .tempdir_in("/tmp")
            .context("creating containerd's directory")?
            .keep();
        let socket = dir.join("containerd.sock");
        let mut path_env = String::new();
        for d in &opts.path_dirs {
            let _ = write!(path_env, "{}:", d.display());
        }
        path_env.push_str(
            &std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );

        let mut me = Self {
            dir,
            socket,
            namespace,
            child: None,
            path_env,
        };
        let config = me.config(opts);
        fs::write(me.dir.join("config.toml"), config).context("writing config.toml")?;
        let log = fs::File::create(me.log_path()).context("creating containerd.log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(me.dir.join("config.toml"))
            .env("PATH", &me.path_env)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (is the containerd package installed?)")?;
        me.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("containerd exited at start ({status}):\n{}", me.log());
            }
            if me.socket.exists() && me.ctr(&["version"]).status.success() {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not serve on {} within {START_TIMEOUT:?}:\n{}",
                    me.socket.display(),
                    me.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn config(&self, opts: &Options) -> String {
        let d = self.dir.display();
        let mut c = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [{}]\n\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\n\
             [debug]\n  level = \"info\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\n",
            if opts.cri {
                ""
            } else {
                "\"io.containerd.grpc.v1.cri\""
            },
        );
        let runc = Runtime {
            name: "runc".into(),
            runtime_type: "io.containerd.runc.v2".into(),
            options: String::new(),
        };
        for rt in std::iter::once(&runc).chain(&opts.runtimes) {
            let table = format!(
                "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{}",
                rt.name
            );
            let _ = write!(
                c,
                "[{table}]\n  runtime_type = \"{}\"\n[{table}.options]\n{}\n\n",
                rt.runtime_type, rt.options
            );
        }
        c.push_str(&opts.extra_config);
        c
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The namespace `ctr` uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The directory holding root, state, socket, config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `ctr <args>` against this containerd (stdin empty, killed after [`CTR_TIMEOUT`]).
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    /// [`Containerd::ctr`] with its own time limit; a killed `ctr` reports a failed status
    /// and says so on stderr.
    pub fn ctr_timeout(&self, args: &[&str], limit: Duration) -> Output {
        let out_dir = tempfile::tempdir().expect("temp dir for ctr output");
        let (stdout, stderr) = (out_dir.path().join("out"), out_dir.path().join("err"));
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace])
            .args(args)
            .env("PATH", &self.path_env)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("ctr stdout file"))
            .stderr(fs::File::create(&stderr).expect("ctr stderr file"))
            .spawn()
            .expect("ctr is installed (Debian package containerd)");
        let deadline = Instant::now() + limit;
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait().expect("waiting for ctr") {
                break (status, false);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break (child.wait().expect("reaping ctr"), true);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = fs::read(&stderr).unwrap_or_default();
        if timed_out {
            stderr.extend_from_slice(format!("\n(ctr {args:?} killed after {limit:?})").as_bytes());
        }
        Output {
            status,
            stdout: fs::read(&stdout).unwrap_or_default(),
            stderr,
        }
    }

    /// Runs `ctr <args>`, panics (with its output and containerd's log) unless it succeeds,
    /// and returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\nstdout: {}\nstderr: {}\ncontainerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr images import` of an OCI archive; returns ctr's output.
    pub fn import(&self, archive: &Path) -> String {
        self.ctr_ok(&["images", "import", &archive.to_string_lossy()])
    }

    fn ids(&self, what: &str) -> Vec<String> {
        let out = self.ctr(&[what, "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Only a live containerd can delete its tasks; a dead one would make every ctr wait.
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()));
        if alive {
            for task in self.ids("tasks") {
                let _ = self.ctr_timeout(
                    &["tasks", "delete", "--force", &task],
                    Duration::from_secs(30),
                );
            }
            for container in self.ids("containers") {
                let _ = self.ctr_timeout(
                    &["containers", "delete", &container],
                    Duration::from_secs(30),
                );
            }
        }
        self.stop();
        // Shims outlive containerd by design; ours are the ones given our socket.
        for pid in crate::processes_matching(&self.socket.to_string_lossy()) {
            // SAFETY: kill(2) with a pid read from /proc; at worst the process is gone.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir_all(Path::new(RUNC_STATE).join(&self.namespace));
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
}

fn unmount_under(dir: &Path) {
    for point in mounts_under(dir) {
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `c` is a NUL-terminated path; a lazy unmount has no memory effects on us.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}
