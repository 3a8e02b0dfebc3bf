//! Container root file systems in shared isolation: containerd's mounts (an overlay of the
//! image's snapshots, or a bind) mounted at `<bundle>/rootfs`, the way runc's shim does it,
//! and unmounted when the task is deleted.

use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;

/// `<bundle>/rootfs`.
pub fn rootfs_dir(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("creating {path}: {source}")]
    Mkdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting {kind} {source_path} on {target}: {why}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        why: String,
    },
    #[error("unmounting {target}: {source}")]
    Unmount { target: PathBuf, source: nix::Error },
}

/// Mounts `mounts` in order at `<bundle>/rootfs` and returns that directory. No mounts
/// means the bundle's rootfs is already prepared.
pub async fn mount(bundle: &Path, mounts: &[Mount]) -> Result<PathBuf, RootfsError> {
    let target = rootfs_dir(bundle);
    if let Err(source) = tokio::fs::create_dir_all(&target).await {
        return Err(RootfsError::Mkdir {
            path: target,
            source,
        });
    }
    for m in mounts {
        containerd_shim::util::mount_rootfs(m, &target)
            .await
            .map_err(|e| RootfsError::Mount {
                kind: m.type_.clone(),
                source_path: m.source.clone(),
                target: target.clone(),
                why: e.to_string(),
            })?;
    }
    Ok(target)
}

/// Unmounts everything stacked on `<bundle>/rootfs` (lazily: a process of the container
/// may still hold it while it dies). Not mounted is fine.
pub fn unmount(bundle: &Path) -> Result<(), RootfsError> {
    let target = rootfs_dir(bundle);
    loop {
        match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // EINVAL: not a mount point (any more); ENOENT: no rootfs dir.
            Err(nix::Error::EINVAL | nix::Error::ENOENT) => return Ok(()),
            Err(source) => return Err(RootfsError::Unmount { target, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounting_what_is_not_mounted_is_fine() {
        let bundle = tempfile::tempdir().unwrap();
        unmount(bundle.path()).unwrap();
        std::fs::create_dir(rootfs_dir(bundle.path())).unwrap();
        unmount(bundle.path()).unwrap();
    }
}
