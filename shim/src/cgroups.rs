//! Cgroups of containers whose agent died without removing them: the agent normally owns
//! them, so the shim only sweeps what a dead agent left (kill what still runs, remove the
//! directories), at every mount of the cgroup tree (v1 hierarchies or the v2 root).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The container's cgroup path as the agent uses it: the spec's `linux.cgroupsPath`, else
/// `/ward/<id>`.
pub fn path_of(spec_json: &[u8], id: &str) -> String {
    serde_json::from_slice::<serde_json::Value>(spec_json)
        .ok()
        .and_then(|v| {
            v.get("linux")?
                .get("cgroupsPath")?
                .as_str()
                .map(str::to_owned)
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("/ward/{id}"))
}

/// The directories of `path` under every cgroup mount that has it.
fn dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return Vec::new();
    }
    let mut roots = vec![PathBuf::from(CGROUP_ROOT)];
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        roots.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    roots
        .into_iter()
        .map(|r| r.join(rel))
        .filter(|d| d.join("cgroup.procs").exists())
        .collect()
}

fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs every process left in the container's cgroup (thawing it first: a frozen
/// process cannot die) and removes its directories. Returns what could not be removed.
pub fn kill_and_remove(path: &str) -> Vec<PathBuf> {
    let dirs = dirs(path);
    for d in &dirs {
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
        let _ = std::fs::write(d.join("cgroup.freeze"), "0");
        for pid in pids(d) {
            // SAFETY: kill(2) has no memory effects; a pid that already exited is ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = Vec::new();
    for d in dirs {
        while !pids(&d).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if std::fs::remove_dir(&d).is_err() && d.exists() {
            left.push(d);
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_comes_from_the_spec_or_defaults_to_ward_id() {
        assert_eq!(
            path_of(br#"{"linux":{"cgroupsPath":"/ns/c1"}}"#, "c1"),
            "/ns/c1"
        );
        assert_eq!(path_of(br#"{"linux":{}}"#, "c1"), "/ward/c1");
        assert_eq!(path_of(b"not json", "c1"), "/ward/c1");
    }

    #[test]
    fn paths_escaping_the_tree_are_ignored() {
        assert!(dirs("/../etc").is_empty());
        assert!(dirs("/").is_empty());
    }
}
