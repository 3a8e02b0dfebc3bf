//! `ward-workload` as `ward compare` uses it: the static binary run on the host, each
//! subcommand's JSON checked for its fields and sane values, and the same binary in the demo
//! image under a real containerd with runc, where the isolation probes must see less than
//! on the host (that is what makes the probes worth comparing).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use ward_rootfs::demo;
use ward_tests::containerd::{Containerd, Options};
use ward_tests::{Need, processes_matching, require, workspace_root};

const RUNC: &str = "io.containerd.runc.v2";
const MIB: usize = 1024 * 1024;

/// The static binary `scripts/static-bin.sh ward-workload` builds, built once per run.
fn workload() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(workspace_root().join("scripts/static-bin.sh"))
            .arg("ward-workload")
            .output()
            .expect("running scripts/static-bin.sh");
        assert!(
            out.status.success(),
            "scripts/static-bin.sh ward-workload failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        ward_rootfs::elf::require_static(&bin).expect("ward-workload is static");
        bin
    })
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ward-workload")
}

/// Runs a subcommand that must succeed and print one JSON object on one stdout line.
fn json(args: &[&str]) -> Value {
    let out = run(workload(), args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    one_json_line(&out.stdout, &args)
}

fn one_json_line(bytes: &[u8], what: &dyn std::fmt::Debug) -> Value {
    let text = String::from_utf8_lossy(bytes);
    assert_eq!(text.lines().count(), 1, "{what:?}: not one line: {text:?}");
    assert!(text.ends_with('\n'), "{what:?}: {text:?}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what:?}: {e}: {text}"));
    eprintln!("{what:?}: {text}");
    v
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

#[test]
fn ready_and_usage_errors() {
    let out = run(workload(), &["ready"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ready\n");

    for (args, want) in [
        (&["bogus"][..], "unknown command \"bogus\""),
        (&[][..], "no command given"),
        (&["cpu", "--iters", "5"][..], "cpu: unknown option --iters"),
        (&["fsync", "--mib", "lots"][..], "--mib \"lots\""),
    ] {
        let out = run(workload(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains("usage:"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(
        workload(),
        &["fsync", "--mib", "1", "--dir", "/nonexistent/d"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ward-workload fsync: cannot create /nonexistent/d/"),
        "{err}"
    );
}

#[test]
fn benchmarks_report_sane_numbers() {
    let v = json(&["syscall", "--iters", "200k"]);
    assert_eq!(v["workload"], "syscall");
    assert_eq!(v["iters"], 200_000);
    let ns = num(&v, "ns_per_call");
    assert!((1.0..100_000.0).contains(&ns), "{v}");

    let v = json(&["cpu", "--millis", "200"]);
    assert_eq!(v["workload"], "cpu");
    assert!(num(&v, "ops") > 0.0 && num(&v, "ops_per_sec") > 0.0, "{v}");
    assert!(num(&v, "elapsed_ms") >= 200.0, "{v}");

    let dir = tempfile::tempdir_in(workspace_root().join("target")).unwrap();
    let v = json(&[
        "fsync",
        "--mib",
        "4",
        "--dir",
        &dir.path().to_string_lossy(),
    ]);
    assert_eq!(v["workload"], "fsync");
    assert_eq!(v["mib"], 4);
    assert!(
        num(&v, "mib_per_sec") > 0.0 && num(&v, "elapsed_ms") > 0.0,
        "{v}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "fsync left {left:?}");

    let v = json(&["latency", "--millis", "300"]);
    assert_eq!(v["workload"], "latency");
    assert!(num(&v, "samples") >= 1.0, "{v}");
    let (p50, p99, max) = (num(&v, "p50_us"), num(&v, "p99_us"), num(&v, "max_us"));
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{v}");
}

#[test]
fn stdout_writes_exactly_what_it_reports() {
    let out = run(workload(), &["stdout", "--mib", "3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 3 * MIB);
    let v = one_json_line(&out.stderr, &"stdout --mib 3 (stderr)");
    assert_eq!(v["workload"], "stdout");
    assert_eq!(v["mib"], 3);
    assert!(num(&v, "elapsed_ms") > 0.0, "{v}");
}

#[test]
fn stress_workloads_stop_and_leave_nothing() {
    // A private copy: its path finds every process of the fork tree.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("ward-workload");
    std::fs::copy(workload(), &bin).unwrap();
    let out = run(&bin, &["forkbomb", "--seconds", "1", "--max-procs", "20"]);
    assert!(out.status.success(), "{out:?}");
    let v = one_json_line(&out.stdout, &"forkbomb --max-procs 20");
    assert_eq!(v["workload"], "forkbomb");
    // No pids limit here: the tree grows to its own cap and no further.
    assert_eq!(v["forks"], 20, "{v}");
    assert_eq!(v["capped"], true, "{v}");
    assert!(v["eagain"].is_u64(), "{v}");
    let left = processes_matching(&bin.to_string_lossy());
    assert!(left.is_empty(), "fork tree left {left:?}");

    let v = json(&["memhog", "--mib", "16", "--seconds", "1"]);
    assert_eq!(v["workload"], "memhog");
    assert!(num(&v, "touched_mib") >= 16.0, "{v}");

    // idle: `ready` at once, then it stays until SIGTERM.
    let mut child = Command::new(&bin)
        .arg("idle")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    assert!(child.try_wait().unwrap().is_none(), "idle exited");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn probe_on_the_host_sees_the_host() {
    let me = std::process::id().to_string();
    let v = json(&["probe", "--host-pid", &me]);
    assert_eq!(v["workload"], "probe");
    assert_eq!(v["host_pid_visible"], true, "{v}");
    assert!(num(&v, "visible_pids") > 1.0, "{v}");
    assert!(num(&v, "syscalls_probed") > 400.0, "{v}");
    assert!(num(&v, "syscalls_reachable") > 200.0, "{v}");
    let release = Command::new("uname").arg("-r").output().unwrap();
    assert_eq!(
        v["kernel_release"],
        String::from_utf8_lossy(&release.stdout).trim()
    );
    for field in [
        "hypervisor",
        "kernel_log_readable",
        "kallsyms_addresses",
        "host_cgroups_visible",
        "seccomp_mode",
    ] {
        assert!(!v[field].is_null(), "{field} missing in {v}");
    }
    // Without --host-pid the field is there, as null.
    let v = json(&["probe"]);
    assert!(v["host_pid_visible"].is_null(), "{v}");
}

/// The probe in the demo image under runc, without and with runc's default seccomp
/// profile, against the same probe on the host.
#[test]
fn probe_in_a_runc_container_sees_less_than_on_the_host() {
    if !require(
        "probe_in_a_runc_container_sees_less_than_on_the_host",
        &[Need::Root],
    ) {
        return;
    }
    let me = std::process::id().to_string();
    let host = json(&["probe", "--host-pid", &me]);
    assert_eq!(host["host_pid_visible"], true, "{host}");

    let tmp = tempfile::tempdir().unwrap();
    let built = demo::build(workload(), Some(tmp.path().join("demo.oci.tar"))).unwrap();
    let ctrd = Containerd::start("workload-runc", &Options::default()).unwrap();
    ctrd.import(&built.path);
    let ctr_run = |id: &str, extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "--rm", "--runtime", RUNC];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&built.reference, id, demo::WORKLOAD_IN_IMAGE]);
        args.extend_from_slice(cmd);
        ctrd.ctr(&args)
    };
    let in_runc = |id: &str, extra: &[&str], cmd: &[&str]| {
        let out = ctr_run(id, extra, cmd);
        assert!(
            out.status.success(),
            "ctr run {id} {cmd:?}: {out:?}\n{}",
            ctrd.log()
        );
        one_json_line(&out.stdout, &format!("runc {id} {cmd:?}"))
    };

    let plain = in_runc("probe-plain", &[], &["probe", "--host-pid", &me]);
    let filtered = in_runc(
        "probe-seccomp",
        &["--seccomp"],
        &["probe", "--host-pid", &me],
    );
    for v in [&plain, &filtered] {
        assert_eq!(v["host_pid_visible"], false, "{v}");
        // The probe itself, maybe a probe child being reaped: nothing of the host.
        assert!(num(v, "visible_pids") <= 3.0, "{v}");
        assert_eq!(v["kernel_release"], host["kernel_release"], "shared kernel");
        assert!(
            num(v, "host_cgroups_visible") < num(&host, "host_cgroups_visible"),
            "{v} vs {host}"
        );
    }
    assert_eq!(plain["seccomp_mode"], host["seccomp_mode"], "{plain}");
    assert_eq!(filtered["seccomp_mode"], 2, "{filtered}");
    let (h, f) = (
        num(&host, "syscalls_reachable"),
        num(&filtered, "syscalls_reachable"),
    );
    assert!(f < h, "seccomp: {f} reachable, host {h}");
    assert_eq!(filtered["kernel_log_readable"], false, "{filtered}");
    eprintln!(
        "syscalls reachable: host {h}, runc {}, runc+seccomp {f}",
        num(&plain, "syscalls_reachable")
    );

    // The benchmarks run from the image too, writing in the container's rootfs.
    let v = in_runc("syscall", &[], &["syscall", "--iters", "100k"]);
    assert!((1.0..100_000.0).contains(&num(&v, "ns_per_call")), "{v}");
    let v = in_runc("fsync", &[], &["fsync", "--mib", "2", "--dir", "/var/tmp"]);
    assert!(num(&v, "mib_per_sec") > 0.0, "{v}");

    // memhog inside a memory limit reports; beyond it (no swap here) the kernel OOM-kills
    // it, and only it: ctr sees the SIGKILL.
    let v = in_runc(
        "memhog-fits",
        &["--memory-limit", "67108864"],
        &["memhog", "--mib", "16", "--seconds", "1"],
    );
    assert!(num(&v, "touched_mib") >= 16.0, "{v}");
    let swap = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if swap
        .lines()
        .any(|l| l.starts_with("SwapTotal:") && l.ends_with(" 0 kB"))
    {
        let out = ctr_run(
            "memhog-oom",
            &["--memory-limit", "33554432"],
            &["memhog", "--mib", "64", "--seconds", "2"],
        );
        assert_eq!(out.status.code(), Some(137), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    assert_eq!(ctrd.ctr_ok(&["containers", "ls", "-q"]), "");
}

/// A pids cgroup for one test (v1 `pids` hierarchy, or the v2 tree when it offers `pids`),
/// removed on drop.
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    fn new(name: &str, max: u32) -> Option<Self> {
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let parent = if v1.join("cgroup.procs").exists() {
            v1
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            v2
        } else {
            return None;
        };
        let dir = parent.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let cg = Self(dir);
        std::fs::write(cg.0.join("pids.max"), max.to_string()).unwrap();
        Some(cg)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn forkbomb_counts_eagain_at_the_pids_limit() {
    if !require("forkbomb_counts_eagain_at_the_pids_limit", &[Need::Root]) {
        return;
    }
    let Some(cg) = PidsCgroup::new("ward-workload-forkbomb", 16) else {
        eprintln!("SKIP forkbomb_counts_eagain_at_the_pids_limit: needs a pids cgroup controller");
        return;
    };
    // The shell joins the cgroup and becomes the workload: the whole tree is inside.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
        .arg(&cg.0)
        .arg(workload())
        .args(["forkbomb", "--seconds", "1", "--max-procs", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = one_json_line(&out.stdout, &"forkbomb under pids.max=16");
    // 16 tasks: the workload itself, the tree's leader and 14 forks.
    assert_eq!(v["forks"], 14, "{v}");
    assert_eq!(v["capped"], false, "{v}");
    assert!(num(&v, "eagain") > 0.0, "{v}");
    let procs = std::fs::read_to_string(cg.0.join("cgroup.procs")).unwrap();
    assert_eq!(procs, "", "the tree is gone");
}

/// The probe in a VM (the nested harness's L1, a real KVM guest of QEMU): its own kernel,
/// none of the host's processes or cgroups, whatever the same probe sees on the host.
#[test]
fn nest_probe_in_a_vm_sees_its_own_kernel() {
    let me = std::process::id().to_string();
    let host = json(&["probe", "--host-pid", &me]);
    let wl = workload().to_string_lossy().into_owned();
    let opts = ward_nest::Options {
        label: format!("nest-workload-{me}"),
        timeout: std::time::Duration::from_secs(300),
        ..ward_nest::Options::default()
    };
    let out = ward_nest::run(&[wl.as_str(), "probe", "--host-pid", &me], &opts)
        .expect("harness round trip")
        .success()
        .expect("ward-workload probe in L1");
    let vm = one_json_line(out.stdout_str().as_bytes(), &"probe in L1");
    assert_eq!(vm["hypervisor"], true, "{vm}");
    assert_eq!(vm["host_pid_visible"], false, "{vm}");
    // L1 runs ward's own nest-host kernel build, not the host's kernel.
    assert_ne!(vm["kernel_release"], host["kernel_release"], "{vm}");
    assert!(
        num(&vm, "visible_pids") < num(&host, "visible_pids"),
        "{vm}"
    );
    assert_eq!(vm["syscalls_probed"], host["syscalls_probed"], "{vm}");
    assert!(num(&vm, "syscalls_reachable") > 0.0, "{vm}");
    assert!(
        processes_matching(&opts.label).is_empty(),
        "QEMU left behind"
    );
}

/// The probe under ward's own shared isolation (containerd → containerd-shim-ward-v2 → host
/// ward-agent): the same walls as runc, which is what `ward compare` puts side by side.
#[test]
fn probe_under_ward_shared_sees_less_than_on_the_host() {
    if !require(
        "probe_under_ward_shared_sees_less_than_on_the_host",
        &[Need::Root],
    ) {
        return;
    }
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    for bin in ["containerd-shim-ward-v2", "ward-agent"] {
        assert!(
            bin_dir.join(bin).exists(),
            "{} missing: build it first (cargo build -p ward-shim -p ward-agent)",
            bin_dir.join(bin).display()
        );
    }
    let me = std::process::id().to_string();
    let host = json(&["probe", "--host-pid", &me]);
    let tmp = tempfile::tempdir().unwrap();
    let built = demo::build(workload(), Some(tmp.path().join("demo.oci.tar"))).unwrap();
    let ctrd = Containerd::start(
        "workload-ward",
        &Options {
            runtimes: vec![ward_tests::containerd::Runtime {
                name: "ward".into(),
                runtime_type: "io.containerd.ward.v2".into(),
                options: String::new(),
            }],
            path_dirs: vec![bin_dir],
            ..Options::default()
        },
    )
    .unwrap();
    ctrd.import(&built.path);
    for (id, extra) in [
        ("ward-plain", &[][..]),
        ("ward-seccomp", &["--seccomp"][..]),
    ] {
        let mut args = vec!["run", "--rm", "--runtime", "io.containerd.ward.v2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            &built.reference,
            id,
            demo::WORKLOAD_IN_IMAGE,
            "probe",
            "--host-pid",
            &me,
        ]);
        let out = ctrd.ctr(&args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {out:?}\n{}",
            ctrd.log()
        );
        let v = one_json_line(&out.stdout, &format!("ward shared {id}"));
        assert_eq!(v["host_pid_visible"], false, "{v}");
        assert!(num(&v, "visible_pids") <= 3.0, "{v}");
        assert_eq!(v["kernel_release"], host["kernel_release"], "shared kernel");
        if extra.is_empty() {
            continue;
        }
        assert_eq!(v["seccomp_mode"], 2, "{v}");
        assert!(
            num(&v, "syscalls_reachable") < num(&host, "syscalls_reachable"),
            "{v} vs {host}"
        );
    }
}
