//! Helpers shared by ward's end-to-end tests.
//!
//! Tests that need something this machine lacks (root, `/dev/kvm`) call [`require`] and
//! return early after one line on stderr saying what is missing; everything else they need
//! (kernels, packages) is a setup error and fails loudly.

use std::path::{Path, PathBuf};

pub mod compare;
pub mod containerd;
pub use containerd::Containerd;

/// What a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Root,
    Kvm,
}

/// `true` when the machine has everything in `needs`; otherwise prints one line naming the
/// test and what is missing, and returns `false` so the test can return.
pub fn require(test: &str, needs: &[Need]) -> bool {
    for need in needs {
        let missing = match need {
            // SAFETY: geteuid has no preconditions and cannot fail.
            Need::Root => (unsafe { libc::geteuid() } != 0).then_some("root"),
            Need::Kvm => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_err()
                .then_some("a usable /dev/kvm"),
        };
        if let Some(what) = missing {
            eprintln!("SKIP {test}: needs {what}");
            return false;
        }
    }
    true
}

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// PIDs of live processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

pub mod guest;
