//! Starting the init helper (`ward-agent init`) with its socket on fd 3 and the process's
//! stdio, from a possibly multithreaded caller: std's Command does the fork+exec, and only
//! fcntl/dup2 run between them.
//!
//! With a terminal, a second socket (fd 4) carries the pty master back: the container
//! process opens the pty in its own devpts, as runc's console socket does, so `tty` names a
//! device that exists inside the container.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::error::{Error, Result};
use super::options::{ProcessIo, Stdio};
use super::protocol::{INIT_SOCKET_ENV, INIT_SOCKET_FD};

/// The fd the helper finds the console socket on (terminal mode only).
pub const CONSOLE_SOCKET_FD: RawFd = 4;

/// A running init helper.
#[derive(Debug)]
pub struct Helper {
    pub child: Child,
    pub sock: UnixStream,
    pub io: ProcessIo,
    /// The socket the pty master arrives on, with a terminal.
    pub console: Option<UnixStream>,
}

impl Helper {
    /// Whether the process gets a terminal.
    pub fn terminal(&self) -> bool {
        self.console.is_some()
    }

    /// Receives the pty master from the container process into `io.terminal`.
    pub fn take_console(&mut self, id: &str) -> Result<()> {
        if let Some(console) = self.console.take() {
            self.io.terminal = Some(recv_fd(&console).map_err(|e| Error::Protocol {
                id: id.into(),
                reason: format!("receiving the pty master: {e}"),
            })?);
        }
        Ok(())
    }
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
    let null = std::process::Stdio::null;
    let mut console = None;
    match stdio {
        Stdio::Pipes => {
            let piped = std::process::Stdio::piped;
            cmd.stdin(piped()).stdout(piped()).stderr(piped());
        }
        Stdio::Inherit => {}
        Stdio::Null => {
            cmd.stdin(null()).stdout(null()).stderr(null());
        }
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        }
        Stdio::Terminal => {
            cmd.stdin(null()).stdout(null()).stderr(null());
            console = Some(
                UnixStream::pair()
                    .map_err(|e| Error::io("socketpair for console of", binary, e))?,
            );
        }
    }
    let raw = theirs.as_raw_fd();
    let raw_console = console.as_ref().map(|(_, t)| t.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only calls fcntl and dup2, which
    // are async-signal-safe; the descriptors stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first (close-on-exec copies above 10), so placing one
            // on fd 3 cannot clobber the other.
            let sock = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 10);
            let cons = raw_console.map(|c| libc::fcntl(c, libc::F_DUPFD_CLOEXEC, 10));
            if sock < 0 || cons.is_some_and(|c| c < 0) {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(sock, INIT_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(c) = cons {
                if libc::dup2(c, CONSOLE_SOCKET_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("spawn init helper", binary, e))?;
    drop(theirs);
    let io = ProcessIo {
        stdin: child.stdin.take().map(|s| File::from(OwnedFd::from(s))),
        stdout: child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
        stderr: child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
        terminal: None,
    };
    Ok(Helper {
        child,
        sock: ours,
        io,
        console: console.map(|(ours, _)| ours),
    })
}

/// Sends one descriptor over a Unix socket (SCM_RIGHTS), with a one-byte payload.
pub fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"t")];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None).map(|_| ())
}

/// Receives one descriptor sent by [`send_fd`]; EOF (every sender gone) is an error.
pub fn recv_fd(sock: &UnixStream) -> std::io::Result<File> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "no descriptor received (the process exited before opening its terminal)",
    ))
}
