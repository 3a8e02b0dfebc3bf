//! The container process: rlimits, oom_score_adj, umask, cwd, user and groups,
//! capabilities, no_new_privs, seccomp and the final execve, in the order runc uses.
//!
//! Runs in the init helper (single-threaded) after the rootfs is in place.

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, chdir, execve, setgroups, setresgid, setresuid};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};

use super::capabilities;
use super::error::{Error, Result};
use super::seccomp;

fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Finds `cmd` on `PATH` from the process environment (inside the new root).
fn lookup(cmd: &str, env: &[String]) -> PathBuf {
    if cmd.contains('/') {
        return PathBuf::from(cmd);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(dir).join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(cmd))
}

fn cstring(field: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidSpec {
        id: String::new(),
        field,
        reason: format!("{s:?} contains a NUL byte"),
    })
}

/// Applies `process` to the calling process and execs it. Returns only on failure.
pub fn exec(spec: &Spec, process: &Process) -> Result<Infallible> {
    let args = process.args().clone().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err(Error::InvalidSpec {
            id: String::new(),
            field: "process.args",
            reason: "empty".into(),
        });
    };
    // apparmorProfile / selinuxLabel: ignored, the library warned at create.
    for rl in process.rlimits().as_deref().unwrap_or_default() {
        let res = resource(rl.typ());
        setrlimit(res, rl.soft(), rl.hard()).map_err(|e| {
            Error::sys(
                format!("setrlimit {:?} {}/{}", rl.typ(), rl.soft(), rl.hard()),
                e,
            )
        })?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| Error::io("write", "/proc/self/oom_score_adj", e))?;
    }
    if let Some(mask) = process.user().umask() {
        umask(Mode::from_bits_truncate(mask as _));
    }
    let cwd = process.cwd();
    chdir(cwd.as_path())
        .map_err(|e| Error::sys(format!("chdir to process.cwd {}", cwd.display()), e))?;

    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => seccomp::compile_profile(profile)?,
        None => Vec::new(),
    };
    let nnp = process.no_new_privileges().unwrap_or(false);
    let caps = process.capabilities().as_ref();
    if let Some(caps) = caps {
        capabilities::drop_bounding(caps)?;
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load while we hold it.
    if !nnp {
        seccomp::load(&filters)?;
    }

    let user = process.user();
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    // Keep the permitted set across the uid change; capset below trims it to the spec.
    // SAFETY: PR_SET_KEEPCAPS takes an integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    // setgroups is refused in a user namespace whose setgroups file says deny; ignore then
    // only when no groups were asked for.
    if let Err(e) = setgroups(&groups) {
        if !groups.is_empty() {
            return Err(Error::sys(format!("setgroups {groups:?}"), e));
        }
    }
    setresgid(gid, gid, gid).map_err(|e| Error::sys(format!("setresgid {gid}"), e))?;
    setresuid(uid, uid, uid).map_err(|e| Error::sys(format!("setresuid {uid}"), e))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(caps) = caps {
        capabilities::apply(caps)?;
    }
    if nnp {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integers and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(Error::sys(
                "prctl PR_SET_NO_NEW_PRIVS",
                nix::errno::Errno::last(),
            ));
        }
        seccomp::load(&filters)?;
    }

    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push("HOME=/".into());
    }
    let path = lookup(arg0, &env);
    let c_path = cstring("process.args", &path.to_string_lossy())?;
    let c_args = args
        .iter()
        .map(|a| cstring("process.args", a))
        .collect::<Result<Vec<_>>>()?;
    let c_env = env
        .iter()
        .map(|e| cstring("process.env", e))
        .collect::<Result<Vec<_>>>()?;
    let Err(e) = execve(&c_path, &c_args, &c_env);
    Err(Error::sys(
        format!("exec {} (process.args[0] {arg0:?})", path.display()),
        e,
    ))
}
