//! What every scenario of the suite uses: the isolation it runs under, a containerd that
//! knows the ward runtime (configured for that isolation), `ctr` helpers, and the check that
//! nothing of a test is left on the host. vm scenarios run inside the nested harness: the
//! test re-runs itself in L1, where KVM can boot the guest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ward_rootfs::image::{self, ImageSpec};
use ward_tests::containerd::{Options, Runtime};
use ward_tests::{Containerd, Need, require};

pub const RUNTIME: &str = "io.containerd.ward.v2";
/// A shell line printing the cgroup v2 file `name` of the calling process, as a container
/// in a VM sees it, with or without a cgroup namespace.
pub fn own_cgroup_file(name: &str) -> String {
    format!("cat \"/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/{name}\"")
}

/// Set in L1: run the scenario itself, in vm isolation.
const INNER_ENV: &str = "WARD_SHIM_SUITE_VM_CONFIG";

/// The isolation a scenario runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iso {
    Shared,
    Vm,
}

/// Runs `scenario` in shared isolation on this host.
pub fn on_host(name: &str, scenario: fn(Iso)) {
    if require(name, &[Need::Root]) {
        scenario(Iso::Shared);
    }
}

/// Runs `scenario` in vm isolation: in L1 of the nested harness (this host's KVM cannot boot
/// Linux), where this same test binary runs this same test with the inner variable set.
pub fn in_vm(name: &str, scenario: fn(Iso)) {
    if std::env::var_os(INNER_ENV).is_some() {
        scenario(Iso::Vm);
        return;
    }
    if !require(&format!("nest_vm::{name}"), &[Need::Root, Need::Kvm]) {
        return;
    }
    let config = vm_config();
    let exe = std::env::current_exe().expect("test executable");
    let filter = format!("nest_vm::{name}");
    let args = [
        exe.display().to_string(),
        "--exact".into(),
        filter.clone(),
        "--nocapture".into(),
        "--test-threads".into(),
        "1".into(),
    ];
    let out = ward_nest::run(
        &args,
        &ward_nest::Options {
            timeout: Duration::from_secs(900),
            env: vec![
                (INNER_ENV.into(), config.display().to_string()),
                ("WARD_BIN_DIR".into(), bin_dir().display().to_string()),
            ],
            label: format!("nest-shim-{name}-{}", std::process::id()),
            ..ward_nest::Options::default()
        },
    )
    .expect("nested harness");
    let all = format!("{}\n{}", out.stdout_str(), out.stderr_str());
    // The inner run's own report, so a failure reads like a local one.
    eprintln!("--- {filter} inside L1:\n{all}");
    assert!(
        all.contains("test result: ok. 1 passed"),
        "{filter} failed inside the nested harness"
    );
}

/// The ward config of the vm suite, written on the host where L1 can read it: the guest
/// kernel and an initrd built here (L1 sees the host's files read-only), layer images in a
/// tmpfs of L1.
fn vm_config() -> PathBuf {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let agent = Command::new(ward_tests::workspace_root().join("scripts/static-agent.sh"))
                .output()
                .expect("running scripts/static-agent.sh");
            assert!(
                agent.status.success(),
                "static agent: {}",
                String::from_utf8_lossy(&agent.stderr)
            );
            let dir = ward_tests::guest::scratch_dir("shim-vm-suite");
            let initrd = ward_rootfs::initrd::build(&ward_rootfs::initrd::InitrdSpec {
                agent: PathBuf::from(String::from_utf8_lossy(&agent.stdout).trim()),
                output: Some(dir.join("initrd.cpio.gz")),
                cache_dir: None,
            })
            .expect("building the initrd");
            let config = dir.join("ward.toml");
            std::fs::write(
                &config,
                format!(
                    "isolation = \"vm\"\n[vm]\nkernel = \"{}\"\ninitrd = \"{}\"\ncache_dir = \"/var/lib/ward-cache\"\n",
                    ward_nest::kernel_path(ward_nest::KernelKind::Guest).display(),
                    initrd.path.display()
                ),
            )
            .unwrap();
            config
        })
        .clone()
}

/// The directory holding `containerd-shim-ward-v2`, `ward-agent` and `ward-vmm`:
/// `$WARD_BIN_DIR`, else the cargo target dir of this test build (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("WARD_BIN_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps/<test>")
                .to_path_buf()
        },
        PathBuf::from,
    );
    for bin in ["containerd-shim-ward-v2", "ward-agent", "ward-vmm"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: build it first (cargo build -p ward-shim -p ward-agent -p ward-vmm)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The demo image archive, built once per test binary.
fn image_archive() -> &'static (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ward-shim-image-")
            .tempdir()
            .unwrap()
            .keep();
        let built = image::build(&ImageSpec {
            output: Some(dir.join("demo.oci.tar")),
            ..ImageSpec::default()
        })
        .expect("building the demo image");
        (built.path, built.reference)
    })
}

/// A containerd whose ward runtime uses isolation `iso`, with the demo image imported.
pub fn containerd(iso: Iso, label: &str) -> (Containerd, String) {
    let env = match iso {
        Iso::Shared => Vec::new(),
        Iso::Vm => vec![(
            "WARD_CONFIG".to_owned(),
            std::env::var(INNER_ENV).expect("vm scenarios run inside the nested harness"),
        )],
    };
    let ctrd = Containerd::start(
        label,
        &Options {
            runtimes: vec![Runtime {
                name: "ward".into(),
                runtime_type: RUNTIME.into(),
                options: String::new(),
            }],
            path_dirs: vec![bin_dir()],
            env,
            ..Options::default()
        },
    )
    .expect("starting containerd");
    let (archive, reference) = image_archive();
    ctrd.import(archive);
    (ctrd, reference.clone())
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn describe(ctrd: &Containerd, out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}\ncontainerd log:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        ctrd.log()
    )
}

/// `ctr run --rm --runtime ward <extra…> <image> <id> <args…>`.
pub fn run(ctrd: &Containerd, image: &str, id: &str, extra: &[&str], args: &[&str]) -> Output {
    let mut v = vec!["run", "--rm", "--runtime", RUNTIME];
    v.extend_from_slice(extra);
    v.push(image);
    v.push(id);
    v.extend_from_slice(args);
    ctrd.ctr(&v)
}

/// `ctr run -d --runtime ward <extra…> <image> <id> sleep 1000`.
pub fn run_detached(ctrd: &Containerd, image: &str, id: &str, extra: &[&str]) {
    let mut v = vec!["run", "-d", "--runtime", RUNTIME];
    v.extend_from_slice(extra);
    v.extend_from_slice(&[image, id, "sleep", "1000"]);
    ctrd.ctr_ok(&v);
}

/// Kills a detached task and deletes it and its container.
pub fn kill_and_delete(ctrd: &Containerd, id: &str) {
    ctrd.ctr_ok(&["task", "kill", "-s", "KILL", id]);
    wait_status(ctrd, id, "STOPPED");
    ctrd.ctr_ok(&["task", "delete", id]);
    ctrd.ctr_ok(&["container", "delete", id]);
}

/// Waits (up to 30 s) until `ctr task ls` shows `id` in `status`.
pub fn wait_status(ctrd: &Containerd, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while task_status(ctrd, id) != status {
        assert!(Instant::now() < deadline, "task {id} never became {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shim processes serving `ctrd` (not `ctr` clients, whose command lines name the
/// socket too).
pub fn shims_of(ctrd: &Containerd) -> Vec<u32> {
    ward_tests::processes_matching(&ctrd.socket().to_string_lossy())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("containerd-shim"))
        })
        .collect()
}

/// The agent (shared) or VMM (vm) processes of sandbox `id`: both name its directory.
pub fn sandbox_processes(id: &str) -> Vec<u32> {
    ward_tests::processes_matching(&format!("/run/ward/{id}/"))
}

/// Asserts nothing of the namespace is left: shims, agents, VMMs, sandbox dirs, cgroups
/// (the containers' and the VMMs'), mounts.
pub fn assert_nothing_left(ctrd: &Containerd, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shims = shims_of(ctrd);
        let processes: Vec<_> = ids.iter().flat_map(|id| sandbox_processes(id)).collect();
        let dirs: Vec<_> = ids
            .iter()
            .map(|id| Path::new("/run/ward").join(id))
            .filter(|d| d.exists())
            .collect();
        let hierarchies: Vec<PathBuf> = std::iter::once(PathBuf::from("/sys/fs/cgroup"))
            .chain(
                std::fs::read_dir("/sys/fs/cgroup")
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|c| c.path()),
            )
            .collect();
        let mut cgroups: Vec<_> = hierarchies
            .iter()
            .map(|h| h.join(ctrd.namespace()))
            .filter(|p| {
                std::fs::read_dir(p)
                    .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
            })
            .collect();
        cgroups.extend(
            hierarchies
                .iter()
                .flat_map(|h| ids.iter().map(move |id| h.join("ward-vmm").join(id)))
                .filter(|p| p.exists()),
        );
        let mounts = ward_tests::containerd::mounts_under(&ctrd.dir().join("state"));
        if shims.is_empty()
            && processes.is_empty()
            && dirs.is_empty()
            && cgroups.is_empty()
            && mounts.is_empty()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: shims {shims:?}, agents/VMMs {processes:?}, dirs {dirs:?}, cgroups {cgroups:?}, mounts {mounts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `ctr <args>` under script(1), so ctr has a terminal to hand to `-t`.
pub fn ctr_with_tty(ctrd: &Containerd, args: &[&str]) -> Output {
    let mut cmd = format!(
        "ctr --address {} --namespace {}",
        ctrd.socket().display(),
        ctrd.namespace()
    );
    for a in args {
        cmd.push_str(" '");
        cmd.push_str(a);
        cmd.push('\'');
    }
    Command::new("timeout")
        .args(["120", "script", "-qec", &cmd, "/dev/null"])
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) (bsdutils) is installed")
}

/// Runs `ctr <args>` with `input` on its stdin (the task's stdin, through containerd's FIFO).
pub fn ctr_with_stdin(ctrd: &Containerd, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("timeout")
        .arg("120")
        .arg("ctr")
        .arg("--address")
        .arg(ctrd.socket())
        .args(["--namespace", ctrd.namespace()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ctr");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

pub fn task_status(ctrd: &Containerd, id: &str) -> String {
    ctrd.ctr_ok(&["task", "ls"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_owned()
}

/// `ctr task exec` of `args` in `id`; its stdout.
pub fn exec(ctrd: &Containerd, id: &str, exec_id: &str, args: &[&str]) -> String {
    let mut v = vec!["task", "exec", "--exec-id", exec_id, id];
    v.extend_from_slice(args);
    ctrd.ctr_ok(&v)
}

/// `ctr events` running in the background, its output in a file.
pub struct Events {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
}

impl Events {
    pub fn watch(ctrd: &Containerd) -> Self {
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("ctr")
            .arg("--address")
            .arg(ctrd.socket())
            .args(["--namespace", ctrd.namespace(), "events"])
            .stdout(out.reopen().unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ctr events");
        // ctr subscribes asynchronously: give it a moment before anything happens.
        std::thread::sleep(Duration::from_millis(300));
        Self { child, out }
    }

    /// Waits (up to `limit`) for a line with every one of `needles`; returns all lines so far.
    pub fn wait_for(&self, needles: &[&str], limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let all = std::fs::read_to_string(self.out.path()).unwrap_or_default();
            if all.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(all);
            }
            if Instant::now() > deadline {
                return Err(all);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
