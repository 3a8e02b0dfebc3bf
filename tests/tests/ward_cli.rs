//! `ward run` and friends as a user runs them: the built `ward` binary, shared isolation
//! on the host kernel, each test with its own run dir (through `--config`) and unique
//! names so tests run in parallel. Every test checks that nothing is left behind: no
//! sandbox or bundle dir, no mount under the run dir, no agent, no container cgroup.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use ward_tests::{Need, processes_matching, require, workspace_root};

/// `ward` and `ward-agent` built once for the whole test binary.
fn ward() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "ward-shim", "--bin", "ward"])
            .args(["-p", "ward-agent", "--bin", "ward-agent"])
            .current_dir(&root)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building ward and ward-agent failed");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target.join("debug/ward")
    })
    .clone()
}

/// One test's ward: its own run dir and config file, a cache shared by all tests.
struct Env {
    dir: tempfile::TempDir,
    name: String,
}

impl Env {
    fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ward-cli-{test}-"))
            .tempdir_in("/tmp")
            .unwrap();
        let agent = ward().with_file_name("ward-agent");
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "isolation = \"shared\"\nrun_dir = \"{}\"\nagent_path = \"{}\"\n",
                dir.path().join("run").display(),
                agent.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            name: format!("{test}-{}", std::process::id()),
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// `ward <cmd> --config <ours> <args…>`.
    fn ward(&self, cmd: &str, args: &[&str]) -> Output {
        let cache = workspace_root().join("target/ward-tests/ward-cli-cache");
        Command::new(ward())
            .arg(cmd)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(args)
            .env("WARD_CACHE", cache)
            .output()
            .expect("running ward")
    }

    /// `ward run --name <ours> <args…>`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--name", &self.name];
        all.extend_from_slice(args);
        self.ward("run", &all)
    }

    /// What a container may leave on the host, as readable strings; empty when clean.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let run = self.run_dir();
        for d in [run.join(&self.name), run.join("bundles").join(&self.name)] {
            if d.exists() {
                out.push(format!("dir {}", d.display()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            if line.contains(&*run.to_string_lossy()) {
                out.push(format!("mount {line}"));
            }
        }
        for pid in processes_matching(&run.to_string_lossy()) {
            out.push(format!("process {pid}"));
        }
        for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let d = entry.path().join("ward").join(&self.name);
            if d.exists() {
                out.push(format!("cgroup {}", d.display()));
            }
        }
        out
    }

    fn assert_nothing_left(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn ward_run_demo_echo_hi_prints_hi_and_exits_0() {
    if !require("ward_run_demo_echo_hi_prints_hi_and_exits_0", &[Need::Root]) {
        return;
    }
    let env = Env::new("echo");
    let out = env.run(&["--isolation", "shared", "demo", "--", "echo", "hi"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    // The built-in image carries the benchmark binary `ward compare` runs.
    ward_tests::guest::static_binary("ward-workload");
    let out = env.run(&["demo", "--", "ward-workload", "ready"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ready\n");
    env.assert_nothing_left();
}

#[test]
fn ward_run_exit_codes_and_stderr_propagate() {
    if !require("ward_run_exit_codes_and_stderr_propagate", &[Need::Root]) {
        return;
    }
    let env = Env::new("exit");
    let out = env.run(&["demo", "--", "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(code(&out), 7);
    assert_eq!(stderr(&out), "oops\n");
    assert_eq!(stdout(&out), "");
    env.assert_nothing_left();
}

#[test]
fn ward_run_applies_env_binds_memory_cpus_and_pids() {
    if !require(
        "ward_run_applies_env_binds_memory_cpus_and_pids",
        &[Need::Root],
    ) {
        return;
    }
    let env = Env::new("flags");
    let share = env.dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("f"), "from the host\n").unwrap();
    let bind = format!("{}:/mnt:ro", share.display());
    // Inside the container's cgroup namespace its own limits are at the root of each
    // hierarchy (v1 here; v2 names them memory.max and cpu.max).
    let script = "echo $GREETING; cat /mnt/f; touch /mnt/new 2>/dev/null || echo read-only; \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";
    let out = env.run(&[
        "-e",
        "GREETING=hello",
        "-v",
        &bind,
        "--memory",
        "16m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "32",
        "demo",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        lines[..3],
        ["hello", "from the host", "read-only"],
        "{lines:?}"
    );
    assert_eq!(
        lines[3],
        (16u64 << 20).to_string(),
        "memory limit: {lines:?}"
    );
    assert!(
        lines[4] == "50000" || lines[4] == "50000 100000",
        "cpu quota: {lines:?}"
    );
    assert_eq!(lines[5], "32", "pids limit: {lines:?}");
    assert!(!share.join("new").exists());
    env.assert_nothing_left();
}

#[test]
fn ward_run_bad_input_is_a_clear_error_with_exit_125_and_nothing_left() {
    if !require(
        "ward_run_bad_input_is_a_clear_error_with_exit_125_and_nothing_left",
        &[Need::Root],
    ) {
        return;
    }
    let env = Env::new("bad");
    let cases: &[(&[&str], &str)] = &[
        (
            &["/nonexistent/image.tar", "--", "true"],
            "/nonexistent/image.tar",
        ),
        (&["--memory", "0", "demo", "--", "true"], "--memory"),
        (&["--memory", "lots", "demo", "--", "true"], "\"lots\""),
        (&["-v", "relative:/x", "demo", "--", "true"], "relative:/x"),
        (
            &["-v", "/nonexistent/dir:/x", "demo", "--", "true"],
            "/nonexistent/dir",
        ),
        (&["--cpus", "0", "demo", "--", "true"], "--cpus"),
        (&["--isolation", "gvisor", "demo", "--", "true"], "gvisor"),
        // Fails in the agent, after the sandbox and the rootfs exist: all undone.
        (&["demo", "--", "/no/such/binary"], "/no/such/binary"),
    ];
    for (args, named) in cases {
        let out = env.run(args);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{args:?}: stderr {err}");
        assert!(
            err.starts_with("ward: ") && err.contains(named),
            "{args:?}: {err}"
        );
        env.assert_nothing_left();
    }
    // Not an OCI image: a file that is not a tar, and a directory without index.json.
    let junk = env.dir.path().join("junk.tar");
    std::fs::write(&junk, "not a tar").unwrap();
    for path in [junk.as_path(), env.dir.path()] {
        let out = env.run(&[&path.display().to_string(), "--", "true"]);
        assert_eq!(code(&out), 125);
        assert!(
            stderr(&out).contains("not an OCI image"),
            "{}",
            stderr(&out)
        );
        env.assert_nothing_left();
    }
}

fn ps(env: &Env, all: bool) -> String {
    let out = env.ward("ps", if all { &["-a"] } else { &[] });
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn ward_run_detached_ps_logs_stop_rm_round_trip() {
    if !require(
        "ward_run_detached_ps_logs_stop_rm_round_trip",
        &[Need::Root],
    ) {
        return;
    }
    let env = Env::new("detach");
    let out = env.run(&[
        "-d",
        "demo",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", env.name));

    let table = ps(&env, false);
    let header = table.lines().next().unwrap();
    for col in ["ID", "IMAGE", "ISOLATION", "STATUS", "CREATED", "COMMAND"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with(&env.name))
        .expect(&table);
    assert!(
        row.contains("demo") && row.contains("shared") && row.contains("running"),
        "{row}"
    );
    assert!(row.contains("sh -c echo started; exec sleep 1000"), "{row}");

    // The output reaches the log while the container runs.
    let mut logged = String::new();
    for _ in 0..500 {
        logged = stdout(&env.ward("logs", &[&env.name]));
        if logged == "started\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(logged, "started\n");

    // A second container may not take the name.
    let dup = env.run(&["-d", "demo", "--", "true"]);
    assert_eq!(code(&dup), 125);
    assert!(stderr(&dup).contains("already in use"), "{}", stderr(&dup));

    // rm refuses a running container.
    let rm = env.ward("rm", &[&env.name]);
    assert_eq!(code(&rm), 1);
    assert!(stderr(&rm).contains("is running"), "{}", stderr(&rm));

    // sleep as PID 1 ignores SIGTERM: stop kills it after the grace, 128 + 9.
    let stop = env.ward("stop", &["-t", "1", &env.name]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    assert!(!ps(&env, false).contains(&env.name));
    let row = ps(&env, true);
    assert!(row.contains("exited (137)"), "{row}");
    env.assert_nothing_left();
    // logs -f of an exited container prints everything and returns.
    assert_eq!(stdout(&env.ward("logs", &["-f", &env.name])), "started\n");

    let rm = env.ward("rm", &[&env.name]);
    assert_eq!(code(&rm), 0, "{}", stderr(&rm));
    assert!(!ps(&env, true).contains(&env.name));
    let missing = env.ward("logs", &[&env.name]);
    assert_eq!(code(&missing), 1);
    assert!(stderr(&missing).contains(&env.name), "{}", stderr(&missing));
    assert!(!env.run_dir().join("cli").join(&env.name).exists());
}

#[test]
fn ward_run_detached_failure_reports_the_error_and_keeps_no_state() {
    if !require(
        "ward_run_detached_failure_reports_the_error_and_keeps_no_state",
        &[Need::Root],
    ) {
        return;
    }
    let env = Env::new("detachfail");
    let out = env.run(&["-d", "demo", "--", "/no/such/binary"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("/no/such/binary"), "{}", stderr(&out));
    assert!(!ps(&env, true).contains(&env.name));
    assert!(!env.run_dir().join("cli").join(&env.name).exists());
    env.assert_nothing_left();
}

#[test]
fn ward_rm_f_kills_a_running_container_and_rm_d_cleans_up_by_itself() {
    if !require(
        "ward_rm_f_kills_a_running_container_and_rm_d_cleans_up_by_itself",
        &[Need::Root],
    ) {
        return;
    }
    let env = Env::new("rmf");
    let out = env.run(&["-d", "demo", "--", "sleep", "1000"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rm = env.ward("rm", &["-f", &env.name]);
    assert_eq!(code(&rm), 0, "{}", stderr(&rm));
    assert!(!ps(&env, true).contains(&env.name));
    env.assert_nothing_left();

    // --rm -d: the state goes when the container exits.
    let out = env.run(&["-d", "--rm", "demo", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let state = env.run_dir().join("cli").join(&env.name);
    for _ in 0..1000 {
        if !state.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!state.exists());
    env.assert_nothing_left();
}

#[test]
fn ward_run_takes_an_oci_layout_directory() {
    if !require("ward_run_takes_an_oci_layout_directory", &[Need::Root]) {
        return;
    }
    let env = Env::new("layout");
    let marker = env.dir.path().join("marker");
    std::fs::write(&marker, "from the layout image\n").unwrap();
    let archive = env.dir.path().join("img.oci.tar");
    ward_rootfs::image::build(&ward_rootfs::image::ImageSpec {
        output: Some(archive.clone()),
        adds: vec![ward_rootfs::image::Add {
            src: marker,
            dst: "/marker".into(),
        }],
        cmd: vec!["cat".into(), "/marker".into()],
        ..Default::default()
    })
    .expect("building the image archive");
    let layout = env.dir.path().join("layout");
    let copy = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .expect("skopeo is installed (Debian package skopeo)");
    assert!(copy.status.success(), "skopeo: {}", stderr(&copy));
    // The image's own Cmd runs when no command is given.
    let out = env.run(&[&layout.display().to_string()]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "from the layout image\n");
    // The archive itself works the same.
    let out = env.run(&[&archive.display().to_string()]);
    assert_eq!(stdout(&out), "from the layout image\n");
    env.assert_nothing_left();
}

#[test]
fn ward_run_t_gives_the_container_a_terminal_of_our_size() {
    if !require(
        "ward_run_t_gives_the_container_a_terminal_of_our_size",
        &[Need::Root],
    ) {
        return;
    }
    let env = Env::new("tty");
    // script(1) puts ward on a pty, as a user's shell would.
    let inner = format!(
        "stty rows 33 cols 101; WARD_CACHE={} {} run --config {} --name {} -t demo -- sh -c 'tty; stty size; exit 3'",
        workspace_root()
            .join("target/ward-tests/ward-cli-cache")
            .display(),
        ward().display(),
        env.dir.path().join("config.toml").display(),
        env.name
    );
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text} {}", stderr(&out));
    assert!(text.contains("/dev/pts/0\r\n"), "{text:?}");
    assert!(text.contains("33 101\r\n"), "{text:?}");
    env.assert_nothing_left();
}

#[test]
fn ward_help_lists_every_command() {
    let out = Command::new(ward()).arg("--help").output().unwrap();
    assert_eq!(code(&out), 0);
    for cmd in ["run", "ps", "logs", "stop", "rm"] {
        assert!(stdout(&out).contains(cmd), "{}", stdout(&out));
    }
    assert!(!stdout(&out).contains("__supervise"));
}

/// vm isolation: a microVM per container. Where this host's KVM cannot boot Linux, `ward
/// run` goes through the nested harness and says so on its first stderr line.
#[test]
fn nest_ward_run_vm_demo_echo_hi_prints_hi_and_exits_0() {
    if !require(
        "nest_ward_run_vm_demo_echo_hi_prints_hi_and_exits_0",
        &[Need::Root, Need::Kvm],
    ) {
        return;
    }
    // Bad input fails before any VM (or nested machine) starts.
    let bad = Command::new(ward())
        .args([
            "run",
            "--isolation",
            "vm",
            "--memory",
            "0",
            "demo",
            "--",
            "true",
        ])
        .output()
        .expect("running ward");
    assert_eq!(code(&bad), 125);
    assert_eq!(
        stderr(&bad).trim(),
        "ward: memory limit (--memory) \"0\": must be more than 0"
    );

    // The guest's /init: the static agent, found in the build tree as the shim finds it.
    ward_tests::guest::static_binary("ward-agent");
    // The caller's cache (kernels) and the default config: the nested machine sees the
    // host's / read-only, with tmpfs on /run and /var/lib.
    let name = format!("vm-{}", std::process::id());
    let out = Command::new(ward())
        .args([
            "run",
            "--name",
            &name,
            "--isolation",
            "vm",
            "demo",
            "--",
            "echo",
            "hi",
        ])
        .output()
        .expect("running ward");
    let err = stderr(&out);
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(
            err.lines().next(),
            Some(
                "ward: this host's KVM cannot boot Linux (PVM); running the VM inside the nested harness (times are emulated)"
            ),
            "{err}"
        );
    }
    assert_eq!(code(&out), 0, "{err}");
    assert_eq!(stdout(&out), "hi\n");
    assert!(!Path::new("/run/ward").join(&name).exists());
    assert!(!Path::new("/run/ward/bundles").join(&name).exists());
}
