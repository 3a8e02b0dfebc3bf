//! The demo image (`ward_rootfs::demo`: busybox plus the static `ward-workload`) as an
//! archive for ward's modes, and as one writable directory for the modes that do not go
//! through ward's launch library: the runc/crun bundles' rootfs and the `host` mode's
//! workload binary. The directory is the same tree the archive's layer is made of, unpacked
//! into a scratch directory on disk, so the fsync workload writes to a real file system.

use std::path::{Path, PathBuf};

use super::CompareError;
use super::runner::WORKLOAD_IN_IMAGE;
use ward_rootfs::demo;
use ward_rootfs::image::{ImageSpec, rootfs_tree};

/// Environment variable naming the static `ward-workload` to put in the image (else
/// `ward_rootfs::demo::find_static_workload` looks beside ward and in the build tree).
pub const WORKLOAD_ENV: &str = "WARD_WORKLOAD";

/// The static `ward-workload` the demo image gets.
pub fn workload_binary() -> Result<PathBuf, CompareError> {
    if let Some(p) = std::env::var_os(WORKLOAD_ENV) {
        return Ok(PathBuf::from(p));
    }
    demo::find_static_workload().map_err(|e| CompareError::Rootfs(e.to_string()))
}

/// The demo image's spec (`ward_rootfs::demo`) with the workload binary in it.
pub fn demo_spec() -> Result<ImageSpec, CompareError> {
    Ok(demo::demo_spec(&workload_binary()?))
}

/// Builds (or finds in the cache: same bytes every time) the demo image archive with the
/// workload in it, for ward's launch library.
pub fn demo_archive() -> Result<PathBuf, CompareError> {
    demo::build(&workload_binary()?, None)
        .map(|b| b.path)
        .map_err(|e| CompareError::Rootfs(e.to_string()))
}

/// Unpacks the demo image's root file system into `<scratch>/rootfs` and returns that path.
pub fn demo_rootfs(scratch: &Path) -> Result<PathBuf, CompareError> {
    let spec = demo_spec()?;
    let tree = rootfs_tree(&spec).map_err(|e| CompareError::Rootfs(e.to_string()))?;
    let tar = tree
        .write_tar(Vec::new())
        .map_err(|e| CompareError::Rootfs(e.to_string()))?;
    let root = scratch.join("rootfs");
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(&root).map_err(|e| {
        CompareError::io(
            format!("unpacking the demo image into {}", root.display()),
            e,
        )
    })?;
    let workload = root.join(WORKLOAD_IN_IMAGE.trim_start_matches('/'));
    if !workload.is_file() {
        return Err(CompareError::Rootfs(format!(
            "{} is missing after unpacking",
            workload.display()
        )));
    }
    Ok(root)
}

/// A scratch directory on disk (not a tmpfs) for bundles and the rootfs, removed on drop.
pub fn scratch_dir() -> Result<tempfile::TempDir, CompareError> {
    tempfile::Builder::new()
        .prefix(&format!("ward-compare-{}-", std::process::id()))
        .tempdir_in("/var/tmp")
        .map_err(|e| CompareError::io("creating a scratch directory in /var/tmp", e))
}
