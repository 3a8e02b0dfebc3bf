//! Running `ward compare` from tests: builds what it needs (the `ward` CLI, the agent, the
//! static `ward-workload`) and returns its parsed JSON report. A vm test calls
//! [`run_json`] with `&["vm", "shared"]`.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::workspace_root;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn cargo_build(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .arg("build")
        .arg("-q")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// The `ward` CLI (and the `ward-agent` and `ward-vmm` beside it) of this workspace, built
/// if needed. The vm mode also needs a static agent for its initrd
/// (`scripts/static-agent.sh`) and the guest kernel.
pub fn ward_binary() -> PathBuf {
    cargo_build(&[
        "-p",
        "ward-shim",
        "--bin",
        "ward",
        "-p",
        "ward-agent",
        "--bin",
        "ward-agent",
        "-p",
        "ward-vmm",
        "--bin",
        "ward-vmm",
    ]);
    target_dir().join("debug/ward")
}

/// The static `ward-workload` the demo image carries, built if needed.
pub fn workload_binary() -> PathBuf {
    cargo_build(&[
        "--release",
        "-p",
        "ward-workload",
        "--target",
        "x86_64-unknown-linux-musl",
    ]);
    target_dir().join("x86_64-unknown-linux-musl/release/ward-workload")
}

/// The static `ward-agent` vm mode puts in its initrd (`scripts/static-agent.sh`), built if
/// needed.
pub fn static_agent() -> PathBuf {
    let out = Command::new(workspace_root().join("scripts/static-agent.sh"))
        .output()
        .expect("running scripts/static-agent.sh");
    assert!(
        out.status.success(),
        "static agent build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `ward compare ARGS…` with the workload binary of this tree: the raw output, and the pid
/// it ran as (every container and sandbox it makes has `-<pid>-` in its id).
pub fn run(args: &[&str]) -> (Output, u32) {
    let ward = ward_binary();
    let child = Command::new(ward)
        .arg("compare")
        .args(args)
        .env("WARD_WORKLOAD", workload_binary())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running ward compare");
    let pid = child.id();
    (
        child.wait_with_output().expect("waiting for ward compare"),
        pid,
    )
}

/// `ward compare --format json` in exactly `modes` (e.g. `["vm", "shared"]`) with `args`
/// added: the parsed report, the stderr text and the pid `ward compare` ran as. Panics, with
/// stderr, when it fails.
pub fn run_json(modes: &[&str], args: &[&str]) -> (serde_json::Value, String, u32) {
    if modes.contains(&"vm") {
        static_agent();
    }
    let modes = modes.join(",");
    let mut all = vec!["--format", "json", "--modes", &modes];
    all.extend_from_slice(args);
    let (out, pid) = run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ward compare {all:?} failed: {}\n{stderr}",
        out.status
    );
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ward compare printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (report, stderr, pid)
}
