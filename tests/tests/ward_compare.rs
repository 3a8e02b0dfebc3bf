//! `ward compare` end to end in shared isolation with runc as the baseline (root): every
//! metric present with its unit and a sane value, the isolation probes giving the expected
//! answers, the SVG chart, nothing left behind, and bad flags refused with exit 2.
//! The vm side (`nest_` test) goes through the nested harness on PVM hosts, as a user's
//! `ward compare` does there.

use std::path::Path;

use serde_json::Value;
use ward_tests::compare::{run, run_json};
use ward_tests::{Need, require};

/// Metrics every container mode reports (vm adds `guest_kernel_syscalls`).
const CONTAINER_METRICS: &[&str] = &[
    "start_p50_ms",
    "start_p95_ms",
    "teardown_p50_ms",
    "teardown_p95_ms",
    "memory_idle_pss_mib",
    "syscall_ns_per_call",
    "cpu_ops_per_sec",
    "cpu_relative_to_host_ratio",
    "fsync_mib_per_sec",
    "stdout_mib_per_sec",
    "latency_alone_p99_us",
    "neighbour_forkbomb_p99_ratio",
    "neighbour_memhog_p99_ratio",
    "attack_surface_syscalls",
];

fn host_kernel() -> String {
    let out = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .expect("uname -r");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Paths and processes whose name carries the id part `-<pid>-` of `ward compare` `pid`.
fn leftovers(pid: u32) -> Vec<String> {
    let tag = format!("-{pid}-");
    let mut found = Vec::new();
    // The scratch dir is /var/tmp/ward-compare-<pid>-….
    for dir in [
        "/run/ward",
        "/run/ward/bundles",
        "/run/runc",
        "/run/crun",
        "/var/tmp",
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains(&tag) {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    if let Ok(cgroups) = std::fs::read_dir("/sys/fs/cgroup") {
        for controller in cgroups.flatten() {
            for e in std::fs::read_dir(controller.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().contains(&tag) {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    found.extend(
        ward_tests::processes_matching(&tag)
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    found
}

#[test]
fn compare_json_shared_and_runc_reports_every_metric_with_units_and_the_probes() {
    if !require(
        "compare_json_shared_and_runc_reports_every_metric_with_units_and_the_probes",
        &[Need::Root],
    ) {
        return;
    }
    let svg = tempfile::NamedTempFile::new().unwrap();
    let svg_path = svg.path().display().to_string();
    let (report, stderr, pid) = run_json(
        &["shared", "runc"],
        &["--runs", "3", "--baseline", "runc", "--svg", &svg_path],
    );
    let text = serde_json::to_string_pretty(&report).unwrap();
    assert!(
        stderr.contains("ward compare [") && stderr.contains("shared: probe"),
        "a progress line per step on stderr: {stderr}"
    );
    assert_eq!(report["schema"], 1, "{text}");
    assert_eq!(report["runs"], 3, "{text}");
    for mode in ["shared", "runc"] {
        let m = &report["modes"][mode];
        assert!(m.is_object(), "mode {mode} missing: {text}");
        assert_eq!(
            m["errors"],
            Value::Array(vec![]),
            "{mode} had errors: {text}"
        );
        for key in CONTAINER_METRICS {
            let v = m[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{mode}.{key} missing: {text}"));
            assert!(v > 0.0 && v.is_finite(), "{mode}.{key} = {v}: {text}");
            let unit = report["units"][key].as_str().unwrap_or_default();
            assert!(!unit.is_empty(), "no unit for {key}: {text}");
            assert!(
                m["samples"][key].as_u64().unwrap_or(0) >= 1,
                "{mode}.{key} without N"
            );
        }
        assert_eq!(
            m["samples"]["start_p50_ms"], 3,
            "--runs 3 start samples: {text}"
        );
        // Sane ranges: a container starts within 10 s, a getppid takes under 100 µs.
        assert!(m["start_p50_ms"].as_f64().unwrap() < 10_000.0, "{text}");
        assert!(
            m["syscall_ns_per_call"].as_f64().unwrap() < 100_000.0,
            "{text}"
        );

        let probe = &m["probe"];
        assert_eq!(
            probe["kernel_release"].as_str(),
            Some(host_kernel().as_str()),
            "{mode} shares the host kernel: {text}"
        );
        assert_eq!(
            probe["host_pid_visible"], false,
            "{mode} sees a host pid: {text}"
        );
        assert!(
            probe["syscalls_reachable"].as_u64().unwrap() > 100,
            "{text}"
        );
        assert_eq!(
            m["attack_surface_syscalls"], probe["syscalls_reachable"],
            "the host kernel is the attack surface in {mode}: {text}"
        );
    }
    assert!(
        report["modes"]["host"]["cpu_ops_per_sec"].as_f64().unwrap() > 0.0,
        "the host reference: {text}"
    );

    let chart = std::fs::read_to_string(Path::new(&svg_path)).unwrap();
    assert!(chart.starts_with("<svg"), "{chart}");
    assert!(chart.contains("<rect"), "{chart}");
    assert!(chart.trim_end().ends_with("</svg>"), "{chart}");

    assert_eq!(
        leftovers(pid),
        Vec::<String>::new(),
        "ward compare left these behind"
    );
}

#[test]
fn compare_table_has_a_column_per_mode_and_the_host_kernel_row() {
    if !require(
        "compare_table_has_a_column_per_mode_and_the_host_kernel_row",
        &[Need::Root],
    ) {
        return;
    }
    let (out, pid) = run(&[
        "--modes",
        "shared,runc",
        "--workloads",
        "start,probe",
        "--runs",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("shared"))
        .unwrap_or_else(|| panic!("no column header: {stdout}"));
    assert!(header.contains("runc"), "{stdout}");
    let kernel = stdout
        .lines()
        .find(|l| l.contains("kernel seen"))
        .unwrap_or_else(|| panic!("no kernel row: {stdout}"));
    assert_eq!(kernel.matches("(host)").count(), 2, "{stdout}");
    assert_eq!(
        leftovers(pid),
        Vec::<String>::new(),
        "ward compare left these behind"
    );
}

#[test]
fn compare_refuses_an_unknown_workload_with_exit_2_and_the_valid_list() {
    let (out, _) = run(&["--workloads", "start,bogus"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown workload \"bogus\""), "{stderr}");
    assert!(
        stderr.contains(
            "valid: start, teardown, memory, syscall, cpu, fsync, stdout, probe, neighbour"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let (out, _) = run(&["--baseline", "docker"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown baseline \"docker\""), "{stderr}");
}

#[test]
fn nest_compare_vm_sees_its_own_kernel_and_only_the_vmm_seccomp_surface() {
    if !require(
        "nest_compare_vm_sees_its_own_kernel_and_only_the_vmm_seccomp_surface",
        &[Need::Root],
    ) {
        return;
    }
    let (report, stderr, _) = run_json(
        &["vm", "shared"],
        &["--runs", "1", "--workloads", "start,memory,probe"],
    );
    let text = serde_json::to_string_pretty(&report).unwrap();
    let nested = std::path::Path::new("/sys/module/kvm_pvm").exists();
    if nested {
        assert!(
            stderr.contains("nested QEMU harness"),
            "one line says so: {stderr}"
        );
        assert_eq!(report["emulated"]["vm"], true, "{text}");
        assert!(report["nested_shared"].is_object(), "{text}");
    }
    let vm = &report["modes"]["vm"];
    assert_eq!(vm["errors"], Value::Array(vec![]), "vm had errors: {text}");
    for key in ["start_p50_ms", "teardown_p50_ms", "memory_idle_pss_mib"] {
        assert!(vm[key].as_f64().unwrap_or(0.0) > 0.0, "vm.{key}: {text}");
    }
    let probe = &vm["probe"];
    assert_ne!(
        probe["kernel_release"].as_str(),
        Some(host_kernel().as_str()),
        "vm sees its own kernel: {text}"
    );
    assert_eq!(probe["hypervisor"], true, "{text}");
    assert_eq!(probe["host_pid_visible"], false, "{text}");
    let surface = vm["attack_surface_syscalls"].as_u64().unwrap();
    let shared = report["modes"]["shared"]["attack_surface_syscalls"]
        .as_u64()
        .unwrap();
    assert!(
        surface > 0 && surface < shared,
        "the VMM's allow-list ({surface}) is smaller than the host kernel's reachable set ({shared}): {text}"
    );
    assert_eq!(
        vm["guest_kernel_syscalls"], probe["syscalls_reachable"],
        "{text}"
    );
    assert!(
        report["vm_over_shared"]["start_p50_ms"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
}
