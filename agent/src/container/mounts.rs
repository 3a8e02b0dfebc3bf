//! The spec's `mounts`: option parsing (flags, propagation, data) and mounting each entry
//! under the new root before `pivot_root`.
//!
//! Runs only in the init helper, inside the container's mount namespace.

use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MsFlags, mount};
use oci_spec::runtime::Mount;

use super::error::{Error, Result};

/// A mount's options split the way mount(2) wants them.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the first mount(2) call.
    pub flags: MsFlags,
    /// Propagation (`rslave`, `private`…), applied by a separate mount(2) call.
    pub propagation: MsFlags,
    /// Filesystem options (`mode=755`, `size=…`) passed as mount data.
    pub data: Vec<String>,
}

/// Parses `options` of one mount entry.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear, prop) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty(), MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty(), MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (
                MsFlags::MS_BIND | MsFlags::MS_REC,
                MsFlags::empty(),
                MsFlags::empty(),
            ),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            ),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SHARED | MsFlags::MS_REC,
            ),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
            ),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ),
            other => {
                out.data.push(other.to_string());
                continue;
            }
        };
        out.flags.insert(set);
        out.flags.remove(clear);
        out.propagation.insert(prop);
    }
    out
}

/// `dest` (absolute inside the container) resolved under `root`, refusing `..` so a spec
/// cannot name a host path. Symlinks inside the rootfs are followed by the kernel; a gap
/// compared to runc's securejoin, documented in docs/container.md.
pub fn resolve_in_root(root: &Path, dest: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in dest.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidSpec {
                    id: String::new(),
                    field: "mounts.destination",
                    reason: format!("{} leaves the rootfs", dest.display()),
                });
            }
        }
    }
    Ok(out)
}

/// Mounts one spec entry under `root`.
pub fn mount_entry(root: &Path, m: &Mount, cgroup_v2: bool, in_user_ns: bool) -> Result<()> {
    let dest_rel = m.destination();
    if !dest_rel.is_absolute() {
        return Err(Error::InvalidSpec {
            id: String::new(),
            field: "mounts.destination",
            reason: format!("{} is not absolute", dest_rel.display()),
        });
    }
    let dest = resolve_in_root(root, dest_rel)?;
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let is_bind = opts.flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));

    if is_bind {
        let meta = fs::metadata(&source).map_err(|e| Error::io("stat bind source", &source, e))?;
        make_target(&dest, meta.is_dir())?;
    } else {
        make_target(&dest, true)?;
    }

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(&dest, opts.flags, cgroup_v2);
    }

    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let flags = if is_bind {
        opts.flags | MsFlags::MS_BIND
    } else {
        opts.flags
    };
    match mount(Some(&source), &dest, Some(typ), flags, data) {
        Ok(()) => {}
        // A user namespace that does not own the network namespace may not mount sysfs:
        // bind the host's /sys read-only instead, as runc does.
        Err(nix::errno::Errno::EPERM) if typ == "sysfs" && in_user_ns => {
            mount(
                Some("/sys"),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| {
                Error::sys(
                    format!(
                        "bind /sys on {} (sysfs refused in a user namespace)",
                        dest.display()
                    ),
                    e,
                )
            })?;
            let ro = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC;
            mount(None::<&str>, &dest, None::<&str>, ro, None::<&str>).map_err(|e| {
                Error::sys(
                    format!("remount bound /sys on {} read-only", dest.display()),
                    e,
                )
            })?;
            return Ok(());
        }
        Err(e) => {
            return Err(Error::sys(
                format!("mount {typ} {} on {}", source.display(), dest.display()),
                e,
            ));
        }
    }

    // A bind ignores every flag but MS_REC on its first call: remount to apply them.
    let per_mount =
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if is_bind && opts.flags.intersects(per_mount) {
        let remount = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | (opts.flags
                & (per_mount
                    | MsFlags::MS_NOATIME
                    | MsFlags::MS_RELATIME
                    | MsFlags::MS_STRICTATIME
                    | MsFlags::MS_NODIRATIME));
        mount(None::<&str>, &dest, None::<&str>, remount, None::<&str>).map_err(|e| {
            Error::sys(
                format!("remount bind {} with {remount:?}", dest.display()),
                e,
            )
        })?;
    }
    if !opts.propagation.is_empty() {
        mount(
            None::<&str>,
            &dest,
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .map_err(|e| {
            Error::sys(
                format!(
                    "set propagation {:?} on {}",
                    opts.propagation,
                    dest.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Creates a mount point: a directory, or an empty file for a file bind.
pub fn make_target(dest: &Path, dir: bool) -> Result<()> {
    if dir {
        fs::create_dir_all(dest).map_err(|e| Error::io("mkdir mount point", dest, e))
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("mkdir mount point", parent, e))?;
        }
        if !dest.exists() {
            fs::File::create(dest).map_err(|e| Error::io("create mount point", dest, e))?;
        }
        Ok(())
    }
}

/// Mounts the cgroup filesystem: cgroup2 as one mount; v1 as a tmpfs holding one mount per
/// hierarchy. Inside a cgroup namespace each shows the container's own cgroup as its root.
fn mount_cgroup(dest: &Path, flags: MsFlags, v2: bool) -> Result<()> {
    let flags =
        flags & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if v2 {
        return mount(Some("cgroup2"), dest, Some("cgroup2"), flags, None::<&str>)
            .map_err(|e| Error::sys(format!("mount cgroup2 on {}", dest.display()), e));
    }
    mount(
        Some("tmpfs"),
        dest,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(|e| {
        Error::sys(
            format!("mount tmpfs for cgroup v1 on {}", dest.display()),
            e,
        )
    })?;
    for h in super::cgroups::v1::hierarchies() {
        let sub = dest.join(h.mount_point.file_name().unwrap_or_default());
        fs::create_dir_all(&sub).map_err(|e| Error::io("mkdir cgroup mount point", &sub, e))?;
        let data = h.options.join(",");
        mount(
            Some("cgroup"),
            &sub,
            Some("cgroup"),
            flags,
            Some(data.as_str()),
        )
        .map_err(|e| Error::sys(format!("mount cgroup {data} on {}", sub.display()), e))?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .map_err(|e| Error::sys(format!("remount ro {}", dest.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(ToString::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn flags_data_and_propagation_are_split() {
        let o = opts(&["rbind", "ro", "nosuid", "rslave", "mode=755", "size=65536k"]);
        assert!(o.flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
    }

    #[test]
    fn later_option_wins() {
        assert!(!opts(&["ro", "rw"]).flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn dotdot_cannot_escape_the_root() {
        assert!(resolve_in_root(Path::new("/r"), Path::new("/a/../../etc")).is_err());
        assert_eq!(
            resolve_in_root(Path::new("/r"), Path::new("/dev/shm")).unwrap(),
            PathBuf::from("/r/dev/shm")
        );
    }
}
