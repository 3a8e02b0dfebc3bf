//! Layer drives in a guest: each read-only layer image arrives as a virtio-blk drive whose
//! serial the host chose; it is mounted once, read-only, and shared by every container.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MsFlags, mount};

use super::registry::RpcError;
use crate::protocol::agent::Storage;

/// How long a drive may take to show up after the host attached it.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// Mounts the drive with `storage.device_serial` at `<state>/layers/<serial>` (once) and
/// returns that directory.
pub fn mount_by_serial(state_dir: &Path, storage: &Storage) -> Result<PathBuf, RpcError> {
    let serial = &storage.device_serial;
    if serial.is_empty()
        || !serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(RpcError::Invalid(format!(
            "layer device serial {serial:?} is not valid"
        )));
    }
    let target = state_dir.join("layers").join(serial);
    if is_mount_point(&target) {
        return Ok(target);
    }
    let device = crate::guest::block_device_by_serial(serial, DEVICE_WAIT)
        .map_err(|e| RpcError::Precondition(e.to_string()))?;
    std::fs::create_dir_all(&target)
        .map_err(|e| RpcError::Internal(format!("creating {}: {e}", target.display())))?;
    let fstype = if storage.fstype.is_empty() {
        "erofs"
    } else {
        storage.fstype.as_str()
    };
    mount(
        Some(&device),
        &target,
        Some(fstype),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_dir(&target);
        RpcError::Internal(format!(
            "mounting {} ({fstype}) on {}: {e}",
            device.display(),
            target.display()
        ))
    })?;
    Ok(target)
}

fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => {
            std::os::unix::fs::MetadataExt::dev(&a) != std::os::unix::fs::MetadataExt::dev(&b)
        }
        _ => false,
    }
}
