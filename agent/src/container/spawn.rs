//! Starting the init helper (`ward-agent init`) with its socket on fd 3 and the process's
//! stdio, from a possibly multithreaded caller: std's Command does the fork+exec, and the
//! only code run between them is a dup2.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::error::{Error, Result};
use super::options::{ProcessIo, Stdio};
use super::protocol::{INIT_SOCKET_ENV, INIT_SOCKET_FD};

/// A running init helper.
#[derive(Debug)]
pub struct Helper {
    pub child: Child,
    pub sock: UnixStream,
    pub io: ProcessIo,
    /// Whether the process got a pty slave.
    pub terminal: bool,
}

/// The helper binary: `explicit`, or our own executable.
pub fn init_binary(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| PathBuf::from("/proc/self/exe"), Path::to_path_buf)
}

/// Spawns `binary init` with `stdio`.
pub fn spawn(binary: &Path, stdio: Stdio) -> Result<Helper> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair for", binary, e))?;
    let mut cmd = Command::new(binary);
    cmd.arg("init")
        .env_clear()
        .env(INIT_SOCKET_ENV, INIT_SOCKET_FD.to_string());
    let mut io = ProcessIo::default();
    let mut terminal = false;
    let mut master = None;
    match stdio {
        Stdio::Pipes => {
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
        }
        Stdio::Inherit => {}
        Stdio::Null => {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        }
        Stdio::Terminal => {
            let pty = nix::pty::openpty(None, None).map_err(|e| Error::sys("openpty", e))?;
            // The master stays with the caller only: it must not leak into the container.
            nix::fcntl::fcntl(
                &pty.master,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| Error::sys("set FD_CLOEXEC on pty master", e))?;
            let slave: OwnedFd = pty.slave;
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| Error::io("dup pty slave", "/dev/ptmx", e))
            };
            cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(slave);
            master = Some(File::from(pty.master));
            terminal = true;
        }
    }
    let raw = theirs.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls dup2/fcntl, which are
    // async-signal-safe; `raw` stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if raw == INIT_SOCKET_FD {
                // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                if libc::fcntl(raw, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, INIT_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("spawn init helper", binary, e))?;
    drop(theirs);
    io.stdin = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
    io.stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
    io.stderr = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
    io.terminal = master;
    Ok(Helper {
        child,
        sock: ours,
        io,
        terminal,
    })
}
