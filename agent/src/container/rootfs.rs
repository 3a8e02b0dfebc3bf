//! The container's root filesystem: overlayfs of read-only layers (or an already prepared
//! directory), the spec's mounts and devices under it, `pivot_root`, then `maskedPaths`,
//! `readonlyPaths` and `root.readonly`.
//!
//! Runs only in the init helper, in the container's new mount namespace: every mount made
//! here disappears with the namespace, so nothing leaks onto the host.

use std::fs;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::statvfs;
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::Spec;

use super::devices;
use super::error::{Error, Result};
use super::mounts;
use super::protocol::RootfsPlan;

/// Builds the root under a fresh mount namespace and pivots into it.
pub fn build(spec: &Spec, plan: &RootfsPlan, cgroup_v2: bool, in_user_ns: bool) -> Result<()> {
    let linux = spec.linux().as_ref();
    // Nothing we mount may propagate back to the host: make our copy of the tree a slave
    // (or what `rootfsPropagation` asks) before the first mount.
    let prop = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some("shared") => MsFlags::MS_SHARED,
        Some("private") => MsFlags::MS_PRIVATE,
        Some("unbindable") => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_SLAVE,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        prop | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("make / {prop:?} recursive"), e))?;

    let root = match plan {
        RootfsPlan::Path(path) => {
            // pivot_root needs the new root to be a mount point.
            mount(
                Some(path),
                path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("bind rootfs {} onto itself", path.display()), e))?;
            path.clone()
        }
        RootfsPlan::Overlay {
            devices,
            lower,
            upper,
            work,
            target,
        } => {
            for (dev, at) in devices {
                mount_layer_device(dev, at)?;
            }
            let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers.join(":"),
                upper.display(),
                work.display()
            );
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|e| {
                Error::sys(format!("mount overlay on {} ({data})", target.display()), e)
            })?;
            target.clone()
        }
    };

    let mut dev_from_host = false;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if m.destination() == Path::new("/dev") && m.source().as_deref() == Some(Path::new("/dev"))
        {
            dev_from_host = true;
        }
        mounts::mount_entry(&root, m, cgroup_v2, in_user_ns)?;
    }
    if !dev_from_host {
        let mut nodes = devices::defaults();
        nodes.extend(
            linux
                .and_then(|l| l.devices().clone())
                .unwrap_or_default()
                .iter()
                .map(devices::from_spec),
        );
        for node in &nodes {
            devices::create(&root, node, in_user_ns)?;
        }
        devices::create_links(&root)?;
    }

    pivot(&root)
}

/// `maskedPaths`, `readonlyPaths`, `root.readonly`: last, after sysctls are written (as
/// runc orders them), since /proc/sys is usually read-only.
pub fn protect(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();

    for p in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        mask(Path::new(&p))?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        make_readonly(Path::new(&p))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(oci_spec::runtime::Root::readonly)
        .unwrap_or(false)
    {
        remount_readonly(Path::new("/"), MsFlags::empty())?;
    }
    Ok(())
}

/// Mounts a read-only layer device: erofs (what ward builds), else ext4 (the fallback).
fn mount_layer_device(dev: &Path, at: &Path) -> Result<()> {
    let mut last = nix::errno::Errno::EINVAL;
    for fstype in ["erofs", "ext4"] {
        match mount(
            Some(dev),
            at,
            Some(fstype),
            MsFlags::MS_RDONLY,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(Error::sys(
        format!(
            "mount layer device {} (erofs or ext4) on {}",
            dev.display(),
            at.display()
        ),
        last,
    ))
}

/// `pivot_root(".", ".")` then a lazy unmount of the old root, as runc does: no directory
/// for the old root is needed, so a read-only rootfs works too.
fn pivot(root: &Path) -> Result<()> {
    chdir(root).map_err(|e| Error::sys(format!("chdir {}", root.display()), e))?;
    pivot_root(".", ".").map_err(|e| Error::sys(format!("pivot_root {}", root.display()), e))?;
    // The old root is stacked on "."; keep its unmount from propagating anywhere.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make old root rslave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("detach old root", e))?;
    chdir("/").map_err(|e| Error::sys("chdir /", e))
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask(path: &Path) -> Result<()> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(()); // nothing to hide
    };
    let res = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.map_err(|e| Error::sys(format!("mask {}", path.display()), e))
}

/// Bind-mounts a path onto itself read-only.
fn make_readonly(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("bind {} onto itself", path.display()), e))?;
    remount_readonly(path, MsFlags::MS_REC)
}

/// Remounts a mount read-only, keeping the flags it has (a user namespace refuses to drop
/// locked nosuid/nodev/noexec).
fn remount_readonly(path: &Path, extra: MsFlags) -> Result<()> {
    let kept = statvfs(path).map_or(MsFlags::empty(), |s| {
        MsFlags::from_bits_truncate(s.flags().bits() as _)
            & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)
    });
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept | extra;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::sys(format!("remount {} read-only", path.display()), e))
}

/// Sets `hostname`, `domainname` and `linux.sysctl` (after the rootfs, so /proc/sys is the
/// container's).
pub fn apply_identity(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).map_err(|e| Error::sys(format!("sethostname {h:?}"), e))?;
    }
    if let Some(d) = spec.domainname() {
        // SAFETY: the pointer and length describe `d`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc != 0 {
            return Err(Error::sys(
                format!("setdomainname {d:?}"),
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) {
        for (key, value) in sysctls {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            fs::write(&path, value.as_bytes()).map_err(|e| Error::io("write sysctl", &path, e))?;
        }
    }
    Ok(())
}
