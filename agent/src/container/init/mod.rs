//! The init helper: `ward-agent init`, started by the library for every container and every
//! exec. A fresh single-threaded process, so it may unshare, setns and fork freely.
//!
//! It reads its [`InitConfig`] from fd 3, enters its namespaces, then clones the container
//! process with `CLONE_PARENT` so that process is the library's own child (waitable, no
//! subreaper needed) and, for a new PID namespace, its PID 1. The helper reports the pid and
//! exits; the clone builds the rootfs (create), waits at the start barrier, and execs.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{Gid, Uid, setresgid, setresuid};
use oci_spec::runtime::LinuxNamespaceType;

use super::error::{Error, Result};
use super::namespaces::{JOIN_ORDER, clone_flag, open_path};
use super::process;
use super::protocol::{FromInit, INIT_SOCKET_FD, InitConfig, InitMode, ToInit, recv, send};
use super::rootfs;

/// Entry point of `ward-agent init`. Never returns.
pub fn main() -> ! {
    // SAFETY: the library passes the socket as fd 3 and nothing else in this fresh process
    // owns that descriptor.
    let mut sock = unsafe { UnixStream::from_raw_fd(INIT_SOCKET_FD) };
    // Nothing but stdio may reach the container process: not our sockets (EOF on them is
    // how the library learns the exec succeeded), not whatever the caller leaked to us.
    cloexec_from(INIT_SOCKET_FD);
    let cfg = match recv::<ToInit>(&mut sock) {
        Ok(Some(ToInit::Config(cfg))) => cfg,
        other => {
            eprintln!("ward-agent init: expected a config on fd {INIT_SOCKET_FD}, got {other:?}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&cfg, &mut sock) {
        let _ = send(&mut sock, &FromInit::Error(e.to_string()));
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// Marks every descriptor from `first` up close-on-exec (runc's CloseExecFrom).
fn cloexec_from(first: i32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: fcntl F_SETFD only changes the flags of a descriptor (a stale one fails).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// The helper's part: namespaces, then the clone.
fn run(cfg: &InitConfig, sock: &mut UnixStream) -> Result<()> {
    let mut new = CloneFlags::empty();
    let mut joins = Vec::new();
    let mut new_user = false;
    let mut new_time = false;
    for kind in JOIN_ORDER {
        let Some(ns) = cfg.namespaces.iter().find(|n| n.kind == kind) else {
            continue;
        };
        match &ns.path {
            Some(path) => joins.push((kind, open_path(path)?, path.clone())),
            None if kind == LinuxNamespaceType::User => new_user = true,
            // clone(2) reads its low byte as the exit signal: CLONE_NEWTIME (0x80) only
            // works through unshare, which puts our future children in the new namespace.
            None if kind == LinuxNamespaceType::Time => new_time = true,
            None => new |= clone_flag(kind),
        }
    }
    // Open every namespace first: after joining a mount namespace, paths change meaning.
    for (kind, fd, path) in &joins {
        setns(fd, clone_flag(*kind)).map_err(|e| {
            Error::sys(
                format!(
                    "setns {} namespace {}",
                    super::namespaces::proc_name(*kind),
                    path.display()
                ),
                e,
            )
        })?;
    }
    if new_user {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| Error::sys("unshare user namespace", e))?;
        expect(
            sock,
            "WriteMaps",
            |m| matches!(m, ToInit::MapsWritten),
            &FromInit::WriteMaps,
        )?;
        // Become root of the new namespace so the clone keeps full capabilities in it.
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| Error::sys("setresgid 0 in the new user namespace", e))?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| Error::sys("setresuid 0 in the new user namespace", e))?;
    }
    if new_time {
        unshare(clone_flag(LinuxNamespaceType::Time))
            .map_err(|e| Error::sys("unshare time namespace", e))?;
    }
    let in_user_ns = new_user || joins.iter().any(|(k, ..)| *k == LinuxNamespaceType::User);

    // SAFETY: this process is single-threaded, so a fork-like clone (no new stack, no
    // CLONE_VM) leaves the child a consistent copy of it.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(libc::CLONE_PARENT | libc::SIGCHLD) | libc::c_long::from(new.bits()),
            0,
            0,
            0,
            0,
        )
    };
    match pid {
        -1 => Err(Error::sys(
            format!("clone with {new:?}"),
            nix::errno::Errno::last(),
        )),
        0 => {
            if let Err(e) = child(cfg, sock, in_user_ns) {
                let _ = send(sock, &FromInit::Error(e.to_string()));
                std::process::exit(1);
            }
            std::process::exit(0); // the library gave up before start
        }
        pid => send(sock, &FromInit::Pid(pid as i32)).map_err(|e| proto(cfg, &e.to_string())),
    }
}

/// The container process, from its clone to its exec.
fn child(cfg: &InitConfig, sock: &mut UnixStream, in_user_ns: bool) -> Result<()> {
    // Its own session: signals to the library's process group do not reach the container,
    // and a terminal can become its controlling one.
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    let process = match &cfg.mode {
        InitMode::Create { rootfs: plan } => {
            rootfs::build(&cfg.spec, plan, cfg.cgroup_v2, in_user_ns)?;
            rootfs::apply_identity(&cfg.spec)?;
            rootfs::protect(&cfg.spec)?;
            if cfg.terminal {
                open_terminal()?;
            }
            send(sock, &FromInit::Ready).map_err(|e| proto(cfg, &e.to_string()))?;
            match recv::<ToInit>(sock) {
                Ok(Some(ToInit::Start)) => {}
                Ok(None) => std::process::exit(0),
                other => return Err(proto(cfg, &format!("expected Start, got {other:?}"))),
            }
            cfg.spec
                .process()
                .clone()
                .ok_or_else(|| Error::InvalidSpec {
                    id: cfg.id.clone(),
                    field: "process",
                    reason: "missing".into(),
                })?
        }
        InitMode::Exec { process } => {
            if cfg.terminal {
                open_terminal()?;
            }
            (**process).clone()
        }
    };
    let Err(e) = process::exec(&cfg.spec, &process);
    Err(e)
}

/// Opens a pty in the container's devpts, makes its slave our stdio and controlling
/// terminal, and sends the master to the library over the console socket.
fn open_terminal() -> Result<()> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("open /dev/ptmx in the container (is /dev/pts mounted?)", e))?;
    nix::pty::grantpt(&master).map_err(|e| Error::sys("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| Error::sys("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| Error::sys("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open pty slave {name}"), e))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys(
                format!("dup2 {name} onto fd {target}"),
                nix::errno::Errno::last(),
            ));
        }
    }
    drop(slave);
    // SAFETY: TIOCSCTTY on fd 0 (the pty slave) takes an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::sys(
            format!("TIOCSCTTY on {name}"),
            nix::errno::Errno::last(),
        ));
    }
    super::spawn::send_fd(super::spawn::CONSOLE_SOCKET_FD, master.as_raw_fd())
        .map_err(|e| Error::sys("send the pty master over the console socket", e))
}

/// Sends `ask`, then waits for the reply `ok` accepts.
fn expect(
    sock: &mut UnixStream,
    what: &str,
    ok: impl Fn(&ToInit) -> bool,
    ask: &FromInit,
) -> Result<()> {
    send(sock, ask).map_err(|e| Error::Protocol {
        id: String::new(),
        reason: format!("sending {what}: {e}"),
    })?;
    match recv::<ToInit>(sock) {
        Ok(Some(m)) if ok(&m) => Ok(()),
        other => Err(Error::Protocol {
            id: String::new(),
            reason: format!("after {what}: unexpected {other:?}"),
        }),
    }
}

fn proto(cfg: &InitConfig, reason: &str) -> Error {
    Error::Protocol {
        id: cfg.id.clone(),
        reason: reason.into(),
    }
}
