//! containerd → `containerd-shim-ward-v2` → host `ward-agent` (shared isolation), end to end
//! with a real containerd, the real shim and agent binaries, and real containers (root).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use ward_rootfs::image::{self, ImageSpec};
use ward_tests::containerd::{Options, Runtime};
use ward_tests::{Containerd, Need, require};

const RUNTIME: &str = "io.containerd.ward.v2";

/// The directory holding `containerd-shim-ward-v2` and `ward-agent`: `$WARD_BIN_DIR`, else
/// the cargo target dir of this test build (`target/debug`).
fn bin_dir() -> PathBuf {
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
    for bin in ["containerd-shim-ward-v2", "ward-agent"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: build it first (cargo build -p ward-shim -p ward-agent)",
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

/// A containerd that knows the ward runtime, with the demo image imported.
fn containerd(label: &str) -> (Containerd, String) {
    let ctrd = Containerd::start(
        label,
        &Options {
            runtimes: vec![Runtime {
                name: "ward".into(),
                runtime_type: RUNTIME.into(),
                options: String::new(),
            }],
            path_dirs: vec![bin_dir()],
            ..Options::default()
        },
    )
    .expect("starting containerd");
    let (archive, reference) = image_archive();
    ctrd.import(archive);
    (ctrd, reference.clone())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(ctrd: &Containerd, out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}\ncontainerd log:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        ctrd.log()
    )
}

/// `ctr run --rm --runtime ward <extra…> <image> <id> <args…>`.
fn run(ctrd: &Containerd, image: &str, id: &str, extra: &[&str], args: &[&str]) -> Output {
    let mut v = vec!["run", "--rm", "--runtime", RUNTIME];
    v.extend_from_slice(extra);
    v.push(image);
    v.push(id);
    v.extend_from_slice(args);
    ctrd.ctr(&v)
}

/// The shim processes serving `ctrd` (not `ctr` clients, whose command lines name the
/// socket too).
fn shims_of(ctrd: &Containerd) -> Vec<u32> {
    ward_tests::processes_matching(&ctrd.socket().to_string_lossy())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("containerd-shim"))
        })
        .collect()
}

/// Asserts nothing of the namespace is left: shims, agents, sandbox dirs, cgroups, mounts.
fn assert_nothing_left(ctrd: &Containerd, ids: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shims = shims_of(ctrd);
        let agents: Vec<_> = ids
            .iter()
            .flat_map(|id| ward_tests::processes_matching(&format!("/run/ward/{id}/")))
            .collect();
        let dirs: Vec<_> = ids
            .iter()
            .map(|id| Path::new("/run/ward").join(id))
            .filter(|d| d.exists())
            .collect();
        let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|c| c.path().join(ctrd.namespace()))
            .filter(|p| {
                std::fs::read_dir(p)
                    .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
            })
            .collect();
        let mounts = ward_tests::containerd::mounts_under(&ctrd.dir().join("state"));
        if shims.is_empty()
            && agents.is_empty()
            && dirs.is_empty()
            && cgroups.is_empty()
            && mounts.is_empty()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: shims {shims:?}, agents {agents:?}, dirs {dirs:?}, cgroups {cgroups:?}, mounts {mounts:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn run_prints_output_and_returns_exit_codes() {
    if !require("run_prints_output_and_returns_exit_codes", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-run");
    let out = run(&ctrd, &image, "hi", &[], &["echo", "hi"]);
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "hi\n", "{}", describe(&ctrd, &out));

    let out = run(
        &ctrd,
        &image,
        "fortytwo",
        &[],
        &["sh", "-c", "echo out; echo err >&2; exit 42"],
    );
    assert_eq!(out.status.code(), Some(42), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("err"),
        "{}",
        describe(&ctrd, &out)
    );
    assert_nothing_left(&ctrd, &["hi", "fortytwo"]);
}

/// Runs `ctr <args>` under script(1), so ctr has a terminal to hand to `-t`.
fn ctr_with_tty(ctrd: &Containerd, args: &[&str]) -> Output {
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
    std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
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
fn ctr_with_stdin(ctrd: &Containerd, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new("timeout")
        .arg("60")
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

fn task_status(ctrd: &Containerd, id: &str) -> String {
    ctrd.ctr_ok(&["task", "ls"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn detached_task_ps_pause_resume_metrics_kill_delete() {
    if !require(
        "detached_task_ps_pause_resume_metrics_kill_delete",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-detached");
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "det",
        "sleep",
        "1000",
    ]);
    assert_eq!(task_status(&ctrd, "det"), "RUNNING");

    let ps = ctrd.ctr_ok(&["task", "ps", "det"]);
    let pids: Vec<u32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "{ps}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap();
    assert_eq!(
        comm.trim(),
        "sleep",
        "ctr task ps names the container's process"
    );

    ctrd.ctr_ok(&["task", "pause", "det"]);
    assert_eq!(task_status(&ctrd, "det"), "PAUSED");
    // Paused means frozen by the kernel, not only reported so.
    let freezer = format!(
        "/sys/fs/cgroup/freezer/{}/det/freezer.state",
        ctrd.namespace()
    );
    if let Ok(state) = std::fs::read_to_string(&freezer) {
        assert_eq!(state.trim(), "FROZEN", "{freezer}");
    } else {
        let events = format!("/sys/fs/cgroup/{}/det/cgroup.events", ctrd.namespace());
        let events = std::fs::read_to_string(&events).expect("a freezer for the container");
        assert!(events.contains("frozen 1"), "{events}");
    }
    ctrd.ctr_ok(&["task", "resume", "det"]);
    assert_eq!(task_status(&ctrd, "det"), "RUNNING");

    let metrics = ctrd.ctr_ok(&["task", "metrics", "--format", "json", "det"]);
    let v: serde_json::Value = serde_json::from_str(&metrics).expect("metrics are JSON");
    assert_eq!(v["pids"]["current"], 1, "{metrics}");
    assert!(
        v["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{metrics}"
    );

    let out = ctrd.ctr(&["task", "checkpoint", "det"]);
    assert!(!out.status.success(), "{}", describe(&ctrd, &out));
    assert!(
        text(&out.stderr).contains("not implemented"),
        "{}",
        describe(&ctrd, &out)
    );
    assert_eq!(task_status(&ctrd, "det"), "RUNNING");

    ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "det"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while task_status(&ctrd, "det") != "STOPPED" {
        assert!(
            std::time::Instant::now() < deadline,
            "task did not stop after SIGKILL"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctrd.ctr_ok(&["task", "delete", "det"]);
    ctrd.ctr_ok(&["container", "delete", "det"]);
    assert_nothing_left(&ctrd, &["det"]);
}

#[test]
fn run_killed_with_sigkill_exits_137() {
    if !require("run_killed_with_sigkill_exits_137", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-kill");
    std::thread::scope(|s| {
        let fg = s.spawn(|| run(&ctrd, &image, "victim", &[], &["sleep", "1000"]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while task_status(&ctrd, "victim") != "RUNNING" {
            assert!(std::time::Instant::now() < deadline, "victim never ran");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "victim"]);
        let out = fg.join().unwrap();
        assert_eq!(out.status.code(), Some(137), "{}", describe(&ctrd, &out));
    });
    assert_nothing_left(&ctrd, &["victim"]);
}

#[test]
fn exec_with_and_without_tty_and_as_another_user() {
    if !require(
        "exec_with_and_without_tty_and_as_another_user",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-exec");
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "ex",
        "sleep",
        "1000",
    ]);

    let out = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "plain",
        "ex",
        "sh",
        "-c",
        "echo out; echo err >&2; [ -t 0 ] || echo no-tty; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "out\nno-tty\n");
    assert_eq!(text(&out.stderr), "err\n");

    // stdin reaches the process and its EOF (ctr's CloseIO) ends it.
    let out = ctr_with_stdin(
        &ctrd,
        &[
            "task",
            "exec",
            "--exec-id",
            "stdin",
            "ex",
            "sh",
            "-c",
            "cat; echo done",
        ],
        b"piped in\n",
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "piped in\ndone\n");

    let out = ctrd.ctr(&[
        "task",
        "exec",
        "--user",
        "1000",
        "--exec-id",
        "user",
        "ex",
        "id",
        "-u",
    ]);
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "1000\n");

    let out = ctr_with_tty(
        &ctrd,
        &[
            "task",
            "exec",
            "-t",
            "--exec-id",
            "tty",
            "ex",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe(&ctrd, &out));
    assert!(
        text(&out.stdout).contains("on-a-tty"),
        "{}",
        describe(&ctrd, &out)
    );

    ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "ex"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    ctrd.ctr_ok(&["task", "delete", "ex"]);
    ctrd.ctr_ok(&["container", "delete", "ex"]);
    assert_nothing_left(&ctrd, &["ex"]);
}

#[test]
fn run_with_tty() {
    if !require("run_with_tty", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-run-tty");
    let out = ctr_with_tty(
        &ctrd,
        &[
            "run",
            "--rm",
            "-t",
            "--runtime",
            RUNTIME,
            &image,
            "tty",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on-a-tty",
        ],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert!(
        text(&out.stdout).contains("on-a-tty"),
        "{}",
        describe(&ctrd, &out)
    );
    assert_nothing_left(&ctrd, &["tty"]);
}

#[test]
fn run_options_env_cwd_read_only_bind_mount_cpus() {
    if !require(
        "run_options_env_cwd_read_only_bind_mount_cpus",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-opts");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from the host\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/host,options=rbind:ro",
        host.path().display()
    );
    let out = run(
        &ctrd,
        &image,
        "opts",
        &[
            "--env",
            "FOO=bar",
            "--cwd",
            "/tmp",
            "--read-only",
            "--mount",
            &mount,
            "--cpus",
            "0.5",
        ],
        &[
            "sh",
            "-c",
            "echo $FOO; pwd; cat /host/f; touch /x 2>/dev/null || echo ro-root; touch /host/y 2>/dev/null || echo ro-bind",
        ],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        &["bar", "/tmp", "from the host", "ro-root", "ro-bind"],
        "{stdout}"
    );
    assert!(!host.path().join("y").exists());

    // --cpus is the container's CFS quota, seen from the host's cgroup tree.
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--cpus",
        "0.5",
        &image,
        "cpus",
        "sleep",
        "1000",
    ]);
    let quota = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/{}/cpus/cpu.cfs_quota_us", ctrd.namespace()))
                .ok()
        })
        .expect("the container's cpu cgroup");
    assert_eq!(quota.trim(), "50000");
    ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "cpus"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    ctrd.ctr_ok(&["task", "delete", "cpus"]);
    ctrd.ctr_ok(&["container", "delete", "cpus"]);
    assert_nothing_left(&ctrd, &["opts", "cpus"]);
}

/// `ctr events` running in the background, its output in a file.
struct Events {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
}

impl Events {
    fn watch(ctrd: &Containerd) -> Self {
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new("ctr")
            .arg("--address")
            .arg(ctrd.socket())
            .args(["--namespace", ctrd.namespace(), "events"])
            .stdout(out.reopen().unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ctr events");
        // ctr subscribes asynchronously: give it a moment before anything happens.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Self { child, out }
    }

    /// Waits (up to 10 s) for a line with every one of `needles`; returns all lines so far.
    fn wait_for(&self, needles: &[&str]) -> Result<String, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let all = std::fs::read_to_string(self.out.path()).unwrap_or_default();
            if all.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(all);
            }
            if std::time::Instant::now() > deadline {
                return Err(all);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn memory_limit_oom_gives_task_oom_and_137() {
    if !require("memory_limit_oom_gives_task_oom_and_137", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-oom");
    let events = Events::watch(&ctrd);
    // tail buffers its input looking for a newline that /dev/zero never sends.
    let out = run(
        &ctrd,
        &image,
        "oom",
        &["--memory-limit", "33554432"],
        &["tail", "/dev/zero"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", describe(&ctrd, &out));
    let all = events
        .wait_for(&["/tasks/oom", "\"container_id\":\"oom\""])
        .unwrap_or_else(|all| panic!("no TaskOOM for oom; events:\n{all}"));
    let oom_at = all.find("/tasks/oom").unwrap();
    let exit_at = all.find("/tasks/exit").expect("a TaskExit");
    assert!(oom_at < exit_at, "TaskOOM comes before TaskExit:\n{all}");
    assert_eq!(
        all.matches("/tasks/oom").count(),
        1,
        "one OOM kill, one event:\n{all}"
    );
    assert_nothing_left(&ctrd, &["oom"]);
}

#[test]
fn twenty_containers_in_a_loop_leave_nothing_behind() {
    if !require(
        "twenty_containers_in_a_loop_leave_nothing_behind",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-loop");
    let ids: Vec<String> = (0..20).map(|i| format!("loop{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let out = run(&ctrd, &image, id, &[], &["sh", "-c", &format!("echo {i}")]);
        assert!(out.status.success(), "{}", describe(&ctrd, &out));
        assert_eq!(
            text(&out.stdout),
            format!("{i}\n"),
            "{}",
            describe(&ctrd, &out)
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_nothing_left(&ctrd, &refs);
    assert_eq!(ctrd.ctr_ok(&["containers", "ls", "-q"]), "");
}

#[test]
fn sigkilled_shim_is_cleaned_up_by_shim_delete() {
    if !require("sigkilled_shim_is_cleaned_up_by_shim_delete", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-crash");
    let events = Events::watch(&ctrd);
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "crash",
        "sleep",
        "1000",
    ]);
    let shims = shims_of(&ctrd);
    assert_eq!(shims.len(), 1, "one shim serves the task: {shims:?}");
    let agents = ward_tests::processes_matching("/run/ward/crash/");
    assert_eq!(agents.len(), 1, "one agent serves the sandbox: {agents:?}");
    // SAFETY: kill(2) on the shim's pid, read from /proc just now.
    unsafe { libc::kill(shims[0] as libc::pid_t, libc::SIGKILL) };

    let all = events
        .wait_for(&["/tasks/exit", "\"container_id\":\"crash\""])
        .unwrap_or_else(|all| {
            panic!(
                "containerd reported no exit; events:\n{all}\n{}",
                ctrd.log()
            )
        });
    assert!(all.contains("\"exit_status\":137"), "{all}");
    let _ = ctrd.ctr(&["task", "delete", "crash"]);
    ctrd.ctr_ok(&["container", "delete", "crash"]);
    assert_nothing_left(&ctrd, &["crash"]);
}

#[test]
fn containers_of_a_cri_sandbox_share_one_shim_and_agent() {
    if !require(
        "containers_of_a_cri_sandbox_share_one_shim_and_agent",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-group");
    let pod = "io.kubernetes.cri.sandbox-id=pod";
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--annotation",
        pod,
        &image,
        "pod",
        "sleep",
        "1000",
    ]);
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--annotation",
        pod,
        &image,
        "app",
        "sleep",
        "1000",
    ]);
    assert_eq!(shims_of(&ctrd).len(), 1, "app joined pod's shim");
    assert_eq!(
        ward_tests::processes_matching("/run/ward/pod/").len(),
        1,
        "one agent for the pod"
    );
    assert!(!Path::new("/run/ward/app").exists());
    let out = ctrd.ctr_ok(&["task", "exec", "--exec-id", "x", "app", "echo", "in-app"]);
    assert_eq!(out, "in-app\n");

    // The sandbox outlives its first container while another still runs.
    for id in ["pod", "app"] {
        ctrd.ctr_ok(&["task", "kill", "-s", "KILL", id]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while task_status(&ctrd, id) != "STOPPED" {
            assert!(std::time::Instant::now() < deadline, "{id} did not stop");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ctrd.ctr_ok(&["task", "delete", id]);
        ctrd.ctr_ok(&["container", "delete", id]);
        if id == "pod" {
            assert_eq!(shims_of(&ctrd).len(), 1, "the shim serves app still");
            assert_eq!(task_status(&ctrd, "app"), "RUNNING");
        }
    }
    assert_nothing_left(&ctrd, &["pod", "app"]);
}

#[test]
fn isolation_comes_from_the_config_file_and_the_annotation() {
    if !require(
        "isolation_comes_from_the_config_file_and_the_annotation",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-isolation");
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("vm.toml");
    std::fs::write(&vm, "isolation = \"vm\"\n").unwrap();
    let vm = vm.to_string_lossy().into_owned();

    // vm isolation does not exist yet: asking for it, by config or annotation, says so.
    for (id, extra) in [
        ("byconfig", vec!["--runtime-config-path", vm.as_str()]),
        ("byannotation", vec!["--annotation", "io.ward.isolation=vm"]),
    ] {
        let out = run(&ctrd, &image, id, &extra, &["echo", "hi"]);
        assert!(!out.status.success(), "{}", describe(&ctrd, &out));
        assert!(
            text(&out.stderr).contains("isolation \"vm\" is not available"),
            "{}",
            describe(&ctrd, &out)
        );
        let _ = ctrd.ctr(&["container", "delete", id]);
    }
    // The annotation overrides the config file.
    let out = run(
        &ctrd,
        &image,
        "overridden",
        &[
            "--runtime-config-path",
            &vm,
            "--annotation",
            "io.ward.isolation=shared",
        ],
        &["echo", "shared"],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "shared\n");
    // A config file that is not there is an error naming it.
    let out = run(
        &ctrd,
        &image,
        "missing",
        &["--runtime-config-path", "/nonexistent/ward.toml"],
        &["true"],
    );
    assert!(
        text(&out.stderr).contains("/nonexistent/ward.toml"),
        "{}",
        describe(&ctrd, &out)
    );
    let _ = ctrd.ctr(&["container", "delete", "missing"]);
    assert_nothing_left(
        &ctrd,
        &["byconfig", "byannotation", "overridden", "missing"],
    );
}

#[test]
fn log_uris_file_and_binary_receive_the_output() {
    if !require("log_uris_file_and_binary_receive_the_output", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-logs");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();

    let log = format!("file://{d}/task.log");
    let out = run(
        &ctrd,
        &image,
        "tofile",
        &["--log-uri", &log],
        &["sh", "-c", "echo one; echo two >&2"],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let logged = std::fs::read_to_string(dir.path().join("task.log")).unwrap();
    assert!(
        logged.contains("one\n") && logged.contains("two\n"),
        "{logged:?}"
    );

    // containerd's logging binary protocol: stdout on fd 3, stderr on fd 4, fd 5 closed
    // when ready, the URI's query as flags.
    let logger = dir.path().join("logger.sh");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\ncat <&3 > {d}/out &\ncat <&4 > {d}/err\nwait\necho \"$CONTAINER_ID $*\" > {d}/args\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}?level=debug", logger.display());
    let out = run(
        &ctrd,
        &image,
        "tobinary",
        &["--log-uri", &uri],
        &["sh", "-c", "echo three; echo four >&2"],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let read = |name: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(dir.path().join(name)) {
                if !s.is_empty() {
                    return s;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "logger wrote no {name}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    assert_eq!(read("out"), "three\n");
    assert_eq!(read("err"), "four\n");
    assert_eq!(read("args"), "tobinary -level debug\n");
    assert_nothing_left(&ctrd, &["tofile", "tobinary"]);
}

fn p50(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `ctr run --rm <image> true`, ward (shared) and runc side by side, 30 runs each, and the
/// shim + agent RSS of one sandbox. Prints the numbers; asserts only that every run worked.
#[test]
fn bench_run_rm_true_ward_shared_vs_runc() {
    if !require("bench_run_rm_true_ward_shared_vs_runc", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-bench");
    let runs = 30;
    let (mut ward, mut runc) = (Vec::new(), Vec::new());
    for i in 0..runs {
        for (runtime, times) in [(RUNTIME, &mut ward), ("io.containerd.runc.v2", &mut runc)] {
            let id = format!("b{i}-{}", if runtime == RUNTIME { "ward" } else { "runc" });
            let started = std::time::Instant::now();
            let out = ctrd.ctr(&["run", "--rm", "--runtime", runtime, &image, &id, "true"]);
            times.push(started.elapsed());
            assert!(out.status.success(), "{runtime}: {}", describe(&ctrd, &out));
        }
    }
    let (ward, runc) = (p50(ward), p50(runc));

    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "rss",
        "sleep",
        "1000",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shim: u64 = shims_of(&ctrd).into_iter().map(rss_kib).sum();
    let agent: u64 = ward_tests::processes_matching("/run/ward/rss/")
        .into_iter()
        .map(rss_kib)
        .sum();
    eprintln!(
        "BENCH ctr run --rm true, p50 of {runs} (binaries in {}): ward(shared) {ward:?}, runc {runc:?}; \
         per sandbox RSS: shim {shim} KiB + agent {agent} KiB = {} KiB",
        bin_dir().display(),
        shim + agent
    );
    assert!(shim > 0 && agent > 0);
    ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "rss"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    ctrd.ctr_ok(&["task", "delete", "rss"]);
    ctrd.ctr_ok(&["container", "delete", "rss"]);
    assert_nothing_left(&ctrd, &["rss"]);
}

#[test]
fn a_dead_agent_takes_its_containers_down_and_leaves_nothing() {
    if !require(
        "a_dead_agent_takes_its_containers_down_and_leaves_nothing",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-agent-dies");
    let events = Events::watch(&ctrd);
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "orphan",
        "sleep",
        "1000",
    ]);
    let ps = ctrd.ctr_ok(&["task", "ps", "orphan"]);
    let pid: u32 = ps
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("the container's pid");
    let agents = ward_tests::processes_matching("/run/ward/orphan/");
    assert_eq!(agents.len(), 1);
    // SAFETY: kill(2) on the agent's pid, read from /proc just now.
    unsafe { libc::kill(agents[0] as libc::pid_t, libc::SIGKILL) };

    events
        .wait_for(&["/tasks/exit", "\"container_id\":\"orphan\""])
        .unwrap_or_else(|all| panic!("no TaskExit after the agent died; events:\n{all}"));
    // Gone, or a zombie waiting for whoever inherited it: not running any more.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        matches!(state, None | Some("Z" | "X")),
        "the container's process outlived its agent: state {state:?}"
    );
    assert_eq!(task_status(&ctrd, "orphan"), "STOPPED");
    ctrd.ctr_ok(&["task", "delete", "orphan"]);
    ctrd.ctr_ok(&["container", "delete", "orphan"]);
    assert_nothing_left(&ctrd, &["orphan"]);
}

/// containerd's Update call (ctr 1.6 has no `task update`), made on the shim's own socket
/// the way containerd makes it.
#[test]
fn update_changes_the_running_containers_limits() {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::shim::shim::UpdateTaskRequest;
    use containerd_shim_protos::shim::shim_ttrpc::TaskClient;

    if !require(
        "update_changes_the_running_containers_limits",
        &[Need::Root],
    ) {
        return;
    }
    let (ctrd, image) = containerd("shim-update");
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "upd",
        "sleep",
        "1000",
    ]);
    let bundle = ctrd
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(ctrd.namespace())
        .join("upd");
    let address = std::fs::read_to_string(bundle.join("address")).expect("the shim's address");
    let client = TaskClient::new(ttrpc::Client::connect(address.trim()).expect("shim socket"));
    let mut req = UpdateTaskRequest::new();
    req.id = "upd".into();
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = br#"{"memory":{"limit":67108864},"cpu":{"quota":25000,"period":100000}}"#.to_vec();
    req.resources = Some(any).into();
    client
        .update(ttrpc::context::with_timeout(30_000_000_000), &req)
        .expect("Update");

    let read = |ctrl: &str, file: &str| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/{ctrl}/{}/upd/{file}",
            ctrd.namespace()
        ))
        .map(|s| s.trim().to_owned())
    };
    if let Ok(limit) = read("memory", "memory.limit_in_bytes") {
        assert_eq!(limit, "67108864");
        assert_eq!(read("cpu", "cpu.cfs_quota_us").unwrap(), "25000");
    } else {
        assert_eq!(read("", "memory.max").unwrap(), "67108864");
    }
    drop(client);
    ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "upd"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    ctrd.ctr_ok(&["task", "delete", "upd"]);
    ctrd.ctr_ok(&["container", "delete", "upd"]);
    assert_nothing_left(&ctrd, &["upd"]);
}
