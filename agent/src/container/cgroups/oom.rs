//! OOM notification: a descriptor that becomes readable when the cgroup hits OOM, for a
//! server to poll (containerd's TaskOOM event) instead of re-reading counters.
//!
//! v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`.
//! v2: an inotify watch on `memory.events` (modified on every event; the caller compares
//! `oom_kill` counts).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use crate::container::error::{Error, Result};

/// A readable-on-OOM descriptor for one cgroup.
#[derive(Debug)]
pub struct OomWatch {
    fd: OwnedFd,
    /// v1 keeps memory.oom_control open for as long as the registration lives.
    _control: Option<File>,
}

impl AsFd for OomWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl OomWatch {
    /// Registers on a v1 memory cgroup directory.
    pub fn v1(dir: &Path) -> Result<Self> {
        // SAFETY: eventfd takes integers and returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::sys("eventfd", nix::errno::Errno::last()));
        }
        // SAFETY: a descriptor the kernel just created for us.
        let fd = unsafe { OwnedFd::from_raw_fd(efd) };
        let control_path = dir.join("memory.oom_control");
        let control = File::open(&control_path).map_err(|e| Error::io("open", &control_path, e))?;
        super::write(
            dir,
            "cgroup.event_control",
            format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(Self {
            fd,
            _control: Some(control),
        })
    }

    /// Watches a v2 cgroup directory's memory.events.
    pub fn v2(dir: &Path) -> Result<Self> {
        // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
        let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if ifd < 0 {
            return Err(Error::sys("inotify_init1", nix::errno::Errno::last()));
        }
        // SAFETY: a descriptor the kernel just created for us.
        let fd = unsafe { OwnedFd::from_raw_fd(ifd) };
        let events = dir.join("memory.events");
        let c = std::ffi::CString::new(events.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::CgroupSetup(format!("{} has a NUL", events.display())))?;
        // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(Error::sys(
                format!("inotify_add_watch {}", events.display()),
                nix::errno::Errno::last(),
            ));
        }
        Ok(Self { fd, _control: None })
    }

    /// Blocks up to `timeout` for a notification; consumes it. `true` when one came.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd that lives across the call.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n < 0 {
            return Err(Error::sys("poll OOM watch", nix::errno::Errno::last()));
        }
        if n == 0 {
            return Ok(false);
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a local buffer of the given length.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        Ok(true)
    }
}
