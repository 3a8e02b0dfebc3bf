//! The runc and crun baselines: one OCI bundle per launch (a generated `config.json` over
//! the shared unpacked demo rootfs), started with `<runtime> run` in the foreground the way
//! `agent/examples/lifecycle_bench.rs` does. The runtime process stays until the container
//! exits and then deletes it, so it counts toward the sandbox's memory and its exit ends
//! the teardown.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Instance, LaunchSpec, Limits, Runtime};
use crate::compare::procs;
use crate::compare::{CompareError, Mode};

/// How long a runtime may take to delete an exited container.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct OciRuntime {
    mode: Mode,
    binary: PathBuf,
    rootfs: PathBuf,
    bundles: PathBuf,
}

impl OciRuntime {
    /// `runc` or `crun` from PATH; `None` (with the reason) when it is not installed.
    pub fn find(mode: Mode, rootfs: &Path, scratch: &Path) -> Result<Self, String> {
        let name = mode.name();
        let binary = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{name} is not installed (not found in PATH)"))?;
        Ok(Self {
            mode,
            binary,
            rootfs: rootfs.to_owned(),
            bundles: scratch.join(format!("bundles-{name}")),
        })
    }
}

/// A command running `binary` in a mount namespace where the cgroup layout is pure v1.
fn runtime_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls (unshare, mount, umount2) with constant, valid arguments.
    unsafe {
        cmd.pre_exec(|| {
            // crun 1.8 refuses the hybrid cgroup layout (a controller on the v2
            // hierarchy). In a private mount namespace without /sys/fs/cgroup/unified
            // both runtimes see a pure v1 layout and create their cgroups there.
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
            Ok(())
        });
    }
    cmd
}

impl Runtime for OciRuntime {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, CompareError> {
        let bundle = self.bundles.join(&spec.id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| CompareError::io(format!("creating bundle {}", bundle.display()), e))?;
        let config = config(&self.rootfs, &spec.argv(), spec.limits);
        let path = bundle.join("config.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(|e| CompareError::io(format!("writing {}", path.display()), e))?;
        let pid_file = bundle.join("container.pid");
        let child = runtime_command(&self.binary)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&bundle);
                CompareError::launch(self.mode, format!("{}: {e}", self.binary.display()))
            })?;
        Ok(Box::new(OciInstance {
            mode: self.mode,
            binary: self.binary.clone(),
            id: spec.id.clone(),
            bundle,
            pid_file,
            child,
        }))
    }
}

struct OciInstance {
    mode: Mode,
    binary: PathBuf,
    id: String,
    bundle: PathBuf,
    pid_file: PathBuf,
    /// `<runtime> run`, parent of the container's process.
    child: Child,
}

impl OciInstance {
    /// The container's host pid, once the runtime has written it.
    fn container_pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Instance for OciInstance {
    fn host_pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }

    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.child.stdout.take().map(|s| Box::new(s) as _)
    }

    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.child.stderr.take().map(|s| Box::new(s) as _)
    }

    fn kill(&mut self) -> Result<(), CompareError> {
        match self.container_pid() {
            Some(pid) => procs::signal(pid, libc::SIGKILL),
            None => procs::signal(self.child.id(), libc::SIGKILL),
        }
        Ok(())
    }

    fn wait(&mut self, limit: Duration) -> Result<Option<i32>, CompareError> {
        let deadline = Instant::now() + limit;
        let runtime = self.child.id();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let gone = match self.container_pid() {
                Some(pid) => procs::wait_gone(pid, left),
                // Not written yet (or the runtime failed before): the runtime's exit ends it.
                None => procs::wait_gone(runtime, left.min(Duration::from_millis(10))),
            }
            .map_err(|e| CompareError::io(format!("{}: waiting for {}", self.mode, self.id), e))?;
            if gone {
                return Ok(None);
            }
            if left.is_zero() {
                return Err(CompareError::launch(
                    self.mode,
                    format!("container {} still running after {limit:?}", self.id),
                ));
            }
        }
    }

    fn teardown(mut self: Box<Self>) -> Result<(), CompareError> {
        let pid = self.child.id();
        let done = procs::wait_gone(pid, TEARDOWN_LIMIT).unwrap_or(false);
        if !done {
            let _ = self.child.kill();
        }
        let status = self.child.wait();
        // A runtime that failed (or was killed) may have left the container behind.
        let _ = runtime_command(&self.binary)
            .args(["delete", "--force", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.bundle);
        if done {
            Ok(())
        } else {
            Err(CompareError::launch(
                self.mode,
                format!(
                    "{} run {} did not end within {TEARDOWN_LIMIT:?} of its container ({status:?}); killed",
                    self.binary.display(),
                    self.id
                ),
            ))
        }
    }
}

/// The spec `runc spec` writes, running `argv` over `rootfs` with `limits`.
fn config(rootfs: &Path, argv: &[String], limits: Limits) -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut resources = serde_json::json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(pids) = limits.pids {
        resources["pids"] = serde_json::json!({ "limit": pids });
    }
    if let Some(bytes) = limits.memory_bytes {
        resources["memory"] = serde_json::json!({ "limit": bytes, "swap": bytes });
    }
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": { "uid": 0, "gid": 0 }, "args": argv,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }], "noNewPrivileges": true
        },
        // Writable: the fsync workload writes into the container's rootfs (a disk, not a tmpfs).
        "root": { "path": rootfs, "readonly": false },
        "hostname": "compare",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "resources": resources,
            "namespaces": [{ "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_land_in_the_resources() {
        let c = config(
            Path::new("/r"),
            &["/usr/bin/ward-workload".into(), "ready".into()],
            Limits {
                pids: Some(32),
                memory_bytes: Some(64 << 20),
            },
        );
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 32);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["process"]["args"][1], "ready");
        assert_eq!(c["root"]["path"], "/r");
    }

    #[test]
    fn no_limits_no_resources() {
        let c = config(Path::new("/r"), &[], Limits::default());
        assert!(c["linux"]["resources"].get("pids").is_none());
        assert!(c["linux"]["resources"].get("memory").is_none());
    }
}
