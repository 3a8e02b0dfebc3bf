//! The nested KVM harness: it gives a working /dev/kvm, reports what the command did, and
//! fails clearly (leaving no QEMU behind) when the kernel, the command or the clock says no.

use std::process::Command;
use std::time::Duration;

use ward_nest::{Error, KernelKind, Options, kernel_path};
use ward_tests::{Need, processes_matching, require, workspace_root};

const KVM_SMOKE: &str = env!("CARGO_BIN_EXE_kvm-smoke");

fn opts(label: &str) -> Options {
    Options {
        label: format!("{label}-{}", std::process::id()),
        timeout: Duration::from_secs(300),
        ..Options::default()
    }
}

fn assert_no_qemu(label: &str) {
    let left = processes_matching(label);
    assert!(
        left.is_empty(),
        "QEMU processes left behind for {label}: {left:?}"
    );
}

#[test]
fn kvm_smoke_runs_on_host_kvm() {
    if !require("kvm_smoke_runs_on_host_kvm", &[Need::Kvm]) {
        return;
    }
    // Ring 0 (halts with HLT) and ring 3 (what PVM runs natively; stops with a shutdown).
    for (args, stop) in [
        (&[][..], "stopped (Hlt)"),
        (&["--cpl", "3"][..], "stopped (Shutdown)"),
    ] {
        let out = Command::new(KVM_SMOKE)
            .args(args)
            .output()
            .expect("running kvm-smoke");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kvm-smoke {args:?} failed on the host:\n{stdout}"
        );
        assert!(stdout.contains("pio port=0x10 value=42"), "{stdout}");
        assert!(
            stdout.contains("mmio addr=0x10000000 value=0x77"),
            "{stdout}"
        );
        assert!(stdout.contains(stop), "{stdout}");
    }
}

#[test]
fn nest_kvm_smoke_in_l1() {
    let o = opts("nest-smoke");
    let out = ward_nest::run(&[KVM_SMOKE], &o)
        .expect("harness round trip")
        .success()
        .expect("kvm-smoke inside L1");
    let stdout = out.stdout_str();
    assert!(stdout.contains("pio port=0x10 value=42"), "{stdout}");
    assert!(
        stdout.contains("mmio addr=0x10000000 value=0x77"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped (Hlt)\nok"), "{stdout}");
    eprintln!("nest round trip: {:?}", out.elapsed);
    assert_no_qemu(&o.label);
}

#[test]
fn nest_reports_status_and_streams_of_a_failing_command() {
    let o = opts("nest-fail");
    let out = ward_nest::run(&["sh", "-c", "echo out; echo err >&2; exit 3"], &o)
        .expect("harness round trip");
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    let err = out.success().unwrap_err();
    assert!(
        matches!(err, Error::CommandFailed { status: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("err"), "{err}");
    assert_no_qemu(&o.label);
}

#[test]
fn nest_gives_fresh_tmpfs_cgroup2_and_a_read_only_host() {
    let o = Options {
        tmpfs: vec!["/srv".into()],
        ..opts("nest-fs")
    };
    let script = "set -e; \
        touch /tmp/a /run/a /var/lib/a /srv/a; \
        stat -f -c %T /tmp /run /var/lib /srv /sys/fs/cgroup; \
        if touch /usr/ward-nest-probe 2>/dev/null; then echo host-writable; else echo host-ro; fi; \
        test -c /dev/kvm && echo kvm";
    let out = ward_nest::run(&["sh", "-c", script], &o)
        .expect("harness round trip")
        .success()
        .expect("probe script");
    assert_eq!(
        out.stdout_str(),
        "tmpfs\ntmpfs\ntmpfs\ntmpfs\ncgroup2fs\nhost-ro\nkvm\n"
    );
}

#[test]
fn nest_bad_kernel_is_a_clear_error() {
    let o = Options {
        kernel: Some("/nonexistent/vmlinux".into()),
        ..opts("nest-nokernel")
    };
    let err = ward_nest::run(&["true"], &o).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");

    // A file that exists but is no kernel: QEMU refuses it, and says so.
    let o = Options {
        kernel: Some(workspace_root().join("guest-kernel/VERSION")),
        ..opts("nest-badkernel")
    };
    let err = ward_nest::run(&["true"], &o).unwrap_err();
    assert!(matches!(err, Error::QemuFailed { .. }), "{err}");
    assert!(err.to_string().contains("QEMU exited"), "{err}");
    assert_no_qemu(&o.label);
}

#[test]
fn nest_timeout_kills_qemu() {
    let o = Options {
        timeout: Duration::from_secs(15),
        ..opts("nest-timeout")
    };
    let err = ward_nest::run(&["sleep", "600"], &o).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out after 15s"), "{err}");
    assert_no_qemu(&o.label);
}

#[test]
fn kernel_build_is_skipped_when_cached() {
    for kind in [KernelKind::NestHost, KernelKind::Guest] {
        let cached = kernel_path(kind);
        assert!(
            cached.is_file(),
            "{} missing: run `guest-kernel/build.sh {}` (as .ci/run does) first",
            cached.display(),
            kind.name()
        );
        let out = Command::new(workspace_root().join("guest-kernel/build.sh"))
            .arg(kind.name())
            .output()
            .expect("running build.sh");
        assert!(out.status.success());
        // Same path as the crate computes, and no build step ran (build.sh logs those on stderr).
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            cached.to_str().unwrap()
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
