//! PID 1 duties of the agent inside a ward guest: the mounts a container host needs, the
//! loopback interface, finding layer drives by the serial the host gave them, and powering
//! the VM off. None of this runs on the host.

mod net;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};

pub use net::loopback_up;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("mounting {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        source: nix::Error,
    },
    #[error("creating {path}: {source}")]
    Mkdir {
        path: String,
        source: std::io::Error,
    },
    #[error("enabling cgroup controllers {controllers:?}: {source}")]
    Controllers {
        controllers: String,
        source: std::io::Error,
    },
    #[error("no block device with serial {serial:?} appeared within {waited:?}")]
    NoDevice { serial: String, waited: Duration },
    #[error("bringing up the loopback interface: {0}")]
    Loopback(nix::Error),
    #[error("leaving the initramfs: {what}: {source}")]
    SwitchRoot {
        what: String,
        source: std::io::Error,
    },
}

/// Set in the environment of the agent once it runs from the tmpfs root.
const SWITCHED_ENV: &str = "WARD_ROOT_SWITCHED";
const NEW_ROOT: &str = "/newroot";

/// Moves PID 1 from the initramfs onto a tmpfs root, as `switch_root` does, and re-executes
/// it there; returns at once in the re-executed agent.
///
/// Containers need `pivot_root`, which the kernel refuses while the root is the initramfs
/// (`rootfs` is the one mount with no parent: EINVAL). On a tmpfs moved over `/` it works.
pub fn leave_initramfs() -> Result<(), GuestError> {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(SWITCHED_ENV).is_some() {
        return Ok(());
    }
    let fail = |what: &str| {
        let what = what.to_owned();
        move |source: std::io::Error| GuestError::SwitchRoot { what, source }
    };
    let sys = |what: &str| {
        let what = what.to_owned();
        move |e: nix::Error| GuestError::SwitchRoot {
            what,
            source: std::io::Error::from(e),
        }
    };
    std::fs::create_dir_all(NEW_ROOT).map_err(fail("creating /newroot"))?;
    mount(
        Some("root"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(sys("mounting tmpfs on /newroot"))?;
    let new = Path::new(NEW_ROOT);
    std::fs::copy("/init", new.join("init")).map_err(fail("copying /init"))?;
    for dir in ["dev", "proc", "sys", "run", "tmp", "mnt", "var"] {
        std::fs::create_dir_all(new.join(dir))
            .map_err(fail("creating the new root's directories"))?;
    }
    // The initramfs copy is no longer needed; the running image stays mapped.
    let _ = std::fs::remove_file("/init");
    std::env::set_current_dir(new).map_err(fail("chdir /newroot"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("moving /newroot to /"))?;
    nix::unistd::chroot(".").map_err(sys("chroot"))?;
    std::env::set_current_dir("/").map_err(fail("chdir /"))?;
    let err = std::process::Command::new("/init")
        .args(std::env::args_os().skip(1))
        .env(SWITCHED_ENV, "1")
        .exec();
    Err(GuestError::SwitchRoot {
        what: "re-executing /init".into(),
        source: err,
    })
}

/// What a guest's PID 1 mounts, in order.
const MOUNTS: &[(&str, &str, &str, MsFlags, &str)] = &[
    // (source, target, fstype, flags, data)
    (
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        "mode=0755",
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    ),
    (
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "nsdelegate",
    ),
    (
        "run",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=0755",
    ),
    (
        "tmp",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
];

/// Mounts proc, sys, dev, devpts, shm, cgroup2, run and tmp, and hands every cgroup v2
/// controller to child cgroups so containers can be limited.
pub fn mount_basics() -> Result<(), GuestError> {
    for &(source, target, fstype, flags, data) in MOUNTS {
        std::fs::create_dir_all(target).map_err(|source| GuestError::Mkdir {
            path: target.to_owned(),
            source,
        })?;
        let data = (!data.is_empty()).then_some(data);
        mount(Some(source), target, Some(fstype), flags, data).map_err(|source| {
            GuestError::Mount {
                fstype,
                target,
                source,
            }
        })?;
    }
    if Path::new("/dev/ptmx").exists() {
        // devpts with newinstance has its own ptmx; make /dev/ptmx point at it.
        let _ = std::fs::remove_file("/dev/ptmx");
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    enable_controllers(Path::new("/sys/fs/cgroup"))
}

fn enable_controllers(root: &Path) -> Result<(), GuestError> {
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let line = available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        return Ok(());
    }
    std::fs::write(root.join("cgroup.subtree_control"), line).map_err(|source| {
        GuestError::Controllers {
            controllers: available.trim().to_owned(),
            source,
        }
    })
}

/// The `/dev/vdX` whose virtio-blk serial is `serial`, waiting up to `wait` for it to appear
/// (a drive attached after boot shows up once the host has swapped its backing file).
pub fn block_device_by_serial(serial: &str, wait: Duration) -> Result<PathBuf, GuestError> {
    block_device_in(Path::new("/sys/block"), Path::new("/dev"), serial, wait)
}

fn block_device_in(
    sys_block: &Path,
    dev: &Path,
    serial: &str,
    wait: Duration,
) -> Result<PathBuf, GuestError> {
    let started = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir(sys_block) {
            for entry in entries.flatten() {
                let found =
                    std::fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
                // virtio-blk serials are NUL-padded to 20 bytes.
                if found.trim_end_matches(['\0', '\n']) == serial {
                    return Ok(dev.join(entry.file_name()));
                }
            }
        }
        if started.elapsed() >= wait {
            return Err(GuestError::NoDevice {
                serial: serial.to_owned(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Flushes file systems and resets the VM; the VMM sees the reset and exits cleanly.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // reboot(2) only returns on error; there is nothing left to do but wait.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_drive_by_its_padded_serial() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("block");
        for (name, serial) in [("vda", "rootfs\0\0\0\0"), ("vdb", "layer-abc\0\0\0")] {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::write(sys.join(name).join("serial"), serial).unwrap();
        }
        let dev = Path::new("/dev");
        let found = block_device_in(&sys, dev, "layer-abc", Duration::ZERO).unwrap();
        assert_eq!(found, Path::new("/dev/vdb"));
        let err = block_device_in(&sys, dev, "layer-zzz", Duration::from_millis(30)).unwrap_err();
        assert!(err.to_string().contains("\"layer-zzz\""), "{err}");
    }
}
