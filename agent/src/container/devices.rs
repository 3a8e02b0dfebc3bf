//! Device nodes in the container's /dev: the OCI default set (`null`, `zero`, `full`,
//! `random`, `urandom`, `tty`, `ptmx` → `pts/ptmx`, the `fd`/`std*` links) and
//! `linux.devices`.
//!
//! Nodes are made with mknod; in a new user namespace, where mknod is refused, they are
//! bind-mounted from the host instead (runc does the same).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid, chown};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::error::{Error, Result};

/// A device node to create: path in the container, type, numbers, mode, owner.
#[derive(Debug, Clone)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every OCI container gets.
pub fn defaults() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Converts a `linux.devices` entry.
pub fn from_spec(d: &LinuxDevice) -> DeviceNode {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    DeviceNode {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666),
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

/// Creates `node` under `root`; `bind` uses a bind mount of the host's node instead of mknod.
pub fn create(root: &Path, node: &DeviceNode, bind: bool) -> Result<()> {
    let dest = super::mounts::resolve_in_root(root, &node.path)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("mkdir", parent, e))?;
    }
    if bind {
        super::mounts::make_target(&dest, false)?;
        return mount(
            Some(&node.path),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            Error::sys(
                format!("bind device {} on {}", node.path.display(), dest.display()),
                e,
            )
        });
    }
    let _ = fs::remove_file(&dest);
    mknod(
        &dest,
        node.kind,
        Mode::from_bits_truncate(node.mode & 0o7777),
        makedev(node.major, node.minor),
    )
    .map_err(|e| {
        Error::sys(
            format!("mknod {} ({}:{})", dest.display(), node.major, node.minor),
            e,
        )
    })?;
    // mknod applies the umask; chmod makes the mode the spec's.
    fs::set_permissions(
        &dest,
        std::os::unix::fs::PermissionsExt::from_mode(node.mode & 0o7777),
    )
    .map_err(|e| Error::io("chmod", &dest, e))?;
    chown(
        &dest,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
    )
    .map_err(|e| Error::sys(format!("chown {}", dest.display()), e))
}

/// The symlinks every container's /dev has.
pub fn create_links(root: &Path) -> Result<()> {
    let dev = root.join("dev");
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        let link = dev.join(name);
        if fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        symlink(target, &link).map_err(|e| Error::io("symlink", &link, e))?;
    }
    Ok(())
}

/// The device cgroup rules to apply: the spec's, then allow rules for the default devices,
/// ptys and every `linux.devices` node (as runc does), so a spec that denies all still
/// gets a working /dev.
pub fn cgroup_rules(
    spec: &oci_spec::runtime::Spec,
) -> Option<Vec<oci_spec::runtime::LinuxDeviceCgroup>> {
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;
    let linux = spec.linux().as_ref()?;
    let mut rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())?;
    let allow = |typ: LinuxDeviceType, major: i64, minor: Option<i64>| {
        let b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .major(major)
            .access("rwm");
        let b = match minor {
            Some(m) => b.minor(m),
            None => b,
        };
        b.build().expect("all fields set")
    };
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(allow(LinuxDeviceType::C, major, Some(minor)));
    }
    rules.push(allow(LinuxDeviceType::C, 136, None)); // /dev/pts/*
    for d in linux.devices().as_deref().unwrap_or_default() {
        rules.push(allow(
            if d.typ() == LinuxDeviceType::B {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            },
            d.major(),
            Some(d.minor()),
        ));
    }
    Some(rules)
}
