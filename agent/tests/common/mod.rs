//! Helpers for the container library's root tests: a busybox-static bundle built per test,
//! a runc-like default spec, and checks that nothing is left behind.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{Value, json};
use ward_agent::container::{Container, CreateOptions, ExitStatus, Rootfs, Stdio};

/// `true` when running as root; otherwise prints one SKIP line.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIP {test}: needs root");
        false
    }
}

/// The ward-agent binary built for these tests (the init helper).
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ward-agent"))
}

/// A temporary bundle with a busybox-static rootfs.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub id: String,
}

/// Fills `dir` with busybox and one symlink per applet.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("busybox-static installed at /bin/busybox");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    for d in ["proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nwheel:x:10:\n",
    )
    .unwrap();
}

impl Bundle {
    pub fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ward-{test}-"))
            .tempdir_in("/tmp")
            .unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        let id = format!("{test}-{}", std::process::id());
        Self { dir, id }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Options for `spec` with pipes and this bundle's rootfs and state dir.
    pub fn options(&self, spec: Spec) -> CreateOptions {
        CreateOptions {
            id: self.id.clone(),
            spec,
            rootfs: Some(Rootfs::Path(self.rootfs())),
            bundle: Some(self.path().to_path_buf()),
            stdio: Stdio::Pipes,
            state_dir: self.state_dir(),
            init_binary: Some(agent_bin()),
        }
    }

    /// Writes `spec` as the bundle's config.json.
    pub fn write_config(&self, spec: &Value) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(spec).unwrap(),
        )
        .unwrap();
    }
}

/// A spec like `runc spec` makes, running `args`.
pub fn default_spec(args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "ward",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [{ "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

pub fn spec(v: Value) -> Spec {
    serde_json::from_value(v).expect("valid spec")
}

/// What a finished container showed.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub oom_count: u64,
}

/// Reads a pipe to the end on a thread.
pub fn drain(f: Option<std::fs::File>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut f) = f {
            let _ = f.read_to_string(&mut s);
        }
        s
    })
}

/// create + start + wait + delete, collecting output.
pub fn run(opts: CreateOptions) -> Outcome {
    let mut c = Container::create(opts).expect("create");
    let io = c.take_io().unwrap();
    drop(io.stdin);
    let (out, err) = (drain(io.stdout), drain(io.stderr));
    c.start().expect("start");
    let status = c.wait().expect("wait");
    let oom_count = c.oom_count();
    c.delete().expect("delete");
    Outcome {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        oom_count,
    }
}

/// Fails the test, naming each leftover, when [`leftovers`] finds any (one scan, so the
/// message shows exactly what failed the check).
pub fn assert_nothing_left(id: &str, bundle: &Path) {
    let left = leftovers(id, bundle);
    assert!(left.is_empty(), "{left:?}");
}

/// Things a container may leave on the host, as readable strings; empty when clean.
pub fn leftovers(id: &str, bundle: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = entry.path().join("ward").join(id);
        if d.exists() {
            out.push(format!("cgroup {}", d.display()));
        }
    }
    let unified = Path::new("/sys/fs/cgroup/ward").join(id);
    if unified.exists() {
        out.push(format!("cgroup {}", unified.display()));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let b = bundle.to_string_lossy();
    out.extend(
        info.lines()
            .filter(|l| l.contains(b.as_ref()))
            .map(|l| format!("mount {l}")),
    );
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
        if after.split_whitespace().nth(1) == Some(me.as_str()) {
            out.push(format!(
                "child process {}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    let state = bundle.join("state").join(id);
    if state.exists() {
        out.push(format!("state dir {}", state.display()));
    }
    out
}

/// Runs every other test of the current test binary inside the nested harness's L1, whose
/// kernel mounts cgroup v2 at /sys/fs/cgroup (the guest's layout), and asserts they pass.
pub fn run_self_in_l1(label: &str) {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "grep -q '^cgroup2 /sys/fs/cgroup ' /proc/mounts || {{ echo 'L1 has no cgroup2 at /sys/fs/cgroup'; exit 3; }}; \
         exec {} --test-threads 1 --skip nest_",
        exe.display()
    );
    let opts = ward_nest::Options {
        label: format!("{label}-{}", std::process::id()),
        timeout: std::time::Duration::from_secs(300),
        ..ward_nest::Options::default()
    };
    let out =
        ward_nest::run(&["/bin/sh", "-c", &script], &opts).expect("nested harness round trip");
    let (stdout, stderr) = (
        out.stdout_str(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    eprintln!("L1 ({:?}):\n{stdout}", out.elapsed);
    assert_eq!(
        out.status, 0,
        "tests failed in L1 (cgroup v2):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test result: ok.") && stdout.contains(" 0 failed"),
        "{stdout}"
    );
}
