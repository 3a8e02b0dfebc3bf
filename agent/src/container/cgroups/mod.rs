//! Cgroups, v1 and v2 behind one trait ([`CgroupManager`]), picked by what the kernel has
//! mounted at /sys/fs/cgroup: cgroup2 there means v2 (the guest), anything else v1 (the host
//! here, hybrid layout).

pub mod devices_bpf;
pub mod oom;
pub mod stats;
pub mod v1;
pub mod v2;

use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

pub use stats::Stats;

use super::error::{Error, Result};

/// One container's cgroup, in whichever hierarchy the kernel has.
pub trait CgroupManager: Debug + Send + Sync {
    /// Creates the cgroup directories (and enables controllers on the way down for v2).
    fn create(&self) -> Result<()>;
    /// Moves a process in.
    fn add(&self, pid: i32) -> Result<()>;
    /// Applies `linux.resources` (create and update).
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Freezes (`true`) or thaws every process in the cgroup, and waits until done.
    fn freeze(&self, frozen: bool) -> Result<()>;
    /// Usage figures, normalized across versions.
    fn stats(&self) -> Result<Stats>;
    /// How many times the OOM killer killed a process of this cgroup.
    fn oom_kill_count(&self) -> u64;
    /// A descriptor that becomes readable when the cgroup hits OOM.
    fn oom_watch(&self) -> Result<oom::OomWatch>;
    /// Pids of every process in the cgroup.
    fn pids(&self) -> Vec<i32>;
    /// Removes the cgroup directories (the cgroup must be empty).
    fn destroy(&self) -> Result<()>;
    /// Whether the cgroup lives in the unified (v2) hierarchy.
    fn is_v2(&self) -> bool;
    /// The cgroup's main directory (for messages and tests).
    fn path(&self) -> PathBuf;
}

/// Root of the cgroup filesystems.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether /sys/fs/cgroup is a cgroup2 mount.
pub fn unified() -> bool {
    nix::sys::statfs::statfs(CGROUP_ROOT)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The manager for `cgroups_path` (relative to each hierarchy's root; containerd passes
/// `/<namespace>/<id>`).
pub fn manager(cgroups_path: &Path) -> Result<Box<dyn CgroupManager>> {
    let rel: PathBuf = cgroups_path
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        return Err(Error::CgroupSetup(format!(
            "cgroupsPath {} names no cgroup",
            cgroups_path.display()
        )));
    }
    if unified() {
        Ok(Box::new(v2::V2::new(&rel)))
    } else {
        Ok(Box::new(v1::V1::new(&rel)?))
    }
}

/// Writes one control file, naming it and the value on failure.
pub(crate) fn write(dir: &Path, file: &str, value: impl AsRef<str>) -> Result<()> {
    let value = value.as_ref();
    fs::write(dir.join(file), value).map_err(|source| Error::Cgroup {
        path: dir.to_path_buf(),
        op: "write",
        file: format!("{file} = {value:?}"),
        source,
    })
}

/// Reads one control file, trimmed.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    fs::read_to_string(dir.join(file))
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Cgroup {
            path: dir.to_path_buf(),
            op: "read",
            file: file.into(),
            source,
        })
}

/// Reads a control file as a number; missing or "max" gives `None`.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file).ok()?.parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(crate) fn keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(dir, file).ok()?.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Pids listed in `dir/cgroup.procs`.
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    read(dir, "cgroup.procs")
        .map(|s| s.lines().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes a cgroup directory, retrying briefly while the kernel finishes exiting its tasks.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(source) => {
                return Err(Error::Cgroup {
                    path: dir.to_path_buf(),
                    op: "rmdir",
                    file: String::new(),
                    source,
                });
            }
        }
    }
    Err(Error::Cgroup {
        path: dir.to_path_buf(),
        op: "rmdir",
        file: String::new(),
        source: std::io::Error::from_raw_os_error(libc::EBUSY),
    })
}

/// "maj:min" of a device rule.
pub(crate) fn devnum(major: i64, minor: i64) -> String {
    format!("{major}:{minor}")
}
