//! The demo image as one writable directory, for the modes that do not go through ward's
//! launch library: the runc/crun bundles' rootfs and the `host` mode's workload binary. The
//! image's root file system (`ward_rootfs::image::rootfs_tree`, the same tree the demo
//! archive's layer is made of) is unpacked into a scratch directory on disk, so the fsync
//! workload writes to a real file system.

use std::path::{Path, PathBuf};

use ward_rootfs::image::{Add, ImageSpec, rootfs_tree};

use super::CompareError;
use super::runner::WORKLOAD_IN_IMAGE;

/// Environment variable naming the static `ward-workload` to put in the image.
pub const WORKLOAD_ENV: &str = "WARD_WORKLOAD";

/// The static `ward-workload`: `$WARD_WORKLOAD`, else beside the running executable, else
/// the musl release build of this tree (`cargo build --release -p ward-workload --target
/// x86_64-unknown-linux-musl`).
pub fn workload_binary() -> Result<PathBuf, CompareError> {
    if let Some(p) = std::env::var_os(WORKLOAD_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| CompareError::io("finding ward's path", e))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("ward-workload"),
        dir.join("../x86_64-unknown-linux-musl/release/ward-workload"),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        CompareError::Rootfs(format!(
            "no ward-workload binary: looked at ${WORKLOAD_ENV} and {}; build it with `cargo build --release -p ward-workload --target x86_64-unknown-linux-musl`",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The demo image's spec with the workload binary in it.
pub fn demo_spec() -> Result<ImageSpec, CompareError> {
    Ok(ImageSpec {
        // /usr/bin is a link to /bin in the demo image.
        adds: vec![Add {
            src: workload_binary()?,
            dst: "/bin/ward-workload".into(),
        }],
        ..ImageSpec::default()
    })
}

/// Builds (or finds in the cache: same bytes every time) the demo image archive with the
/// workload in it, for ward's launch library.
pub fn demo_archive() -> Result<PathBuf, CompareError> {
    ward_rootfs::image::build(&demo_spec()?)
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
