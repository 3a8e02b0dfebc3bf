//! Which system calls reach the kernel from here, amicontained-style: every x86_64 number
//! is called once with invalid arguments (all -1) in a forked child, and the child's fate
//! says whether a filter stood in the way. ENOSYS (no such call, or seccomp's choice) and
//! EPERM (seccomp's default errno, or a missing capability) count as not reachable; a
//! SIGSYS death (seccomp kill/trap) too. Anything else — another errno, success, any
//! other signal — means the call got into the kernel proper.

use crate::sys::{self, Fork};

/// The highest number probed (x86_64 numbering; `lsm_set_self_attr` in 6.8).
pub const LAST: i64 = 460;

/// How long a child may sit in a call before SIGALRM ends it (the call was reachable).
const CHILD_TIMER_US: u32 = 100_000;

/// Numbers never called, and why. Even in a throw-away child these would end or hang the
/// probe, signal other processes, or leave something behind.
pub const DENY: &[(i64, &str)] = &[
    (libc::SYS_poll, "blocks"),
    (
        libc::SYS_rt_sigreturn,
        "restores a garbage frame: crashes the child",
    ),
    (libc::SYS_select, "blocks"),
    (libc::SYS_pause, "blocks"),
    (libc::SYS_nanosleep, "blocks"),
    (libc::SYS_clone, "creates processes"),
    (libc::SYS_fork, "creates processes"),
    (libc::SYS_vfork, "creates processes"),
    (libc::SYS_execve, "replaces the child"),
    (libc::SYS_exit, "ends the child with a misleading status"),
    (libc::SYS_wait4, "blocks"),
    (libc::SYS_kill, "kill(-1) signals every process"),
    (
        libc::SYS_msgget,
        "creates a SysV message queue that outlives the probe",
    ),
    (libc::SYS_rt_sigtimedwait, "blocks"),
    (libc::SYS_rt_sigqueueinfo, "signals other processes"),
    (libc::SYS_rt_sigsuspend, "blocks"),
    (libc::SYS_vhangup, "hangs up the controlling terminal"),
    (
        libc::SYS_sync,
        "flushes every filesystem: slow, and felt by the whole host",
    ),
    (libc::SYS_reboot, "reboots or halts the machine"),
    (libc::SYS_tkill, "signals other processes"),
    (libc::SYS_clock_nanosleep, "blocks"),
    (
        libc::SYS_exit_group,
        "ends the child with a misleading status",
    ),
    (libc::SYS_epoll_wait, "blocks"),
    (libc::SYS_tgkill, "signals other processes"),
    (libc::SYS_waitid, "blocks"),
    (libc::SYS_pselect6, "blocks"),
    (libc::SYS_ppoll, "blocks"),
    (libc::SYS_epoll_pwait, "blocks"),
    (libc::SYS_rt_tgsigqueueinfo, "signals other processes"),
    (libc::SYS_execveat, "replaces the child"),
    (libc::SYS_pidfd_send_signal, "signals other processes"),
    (libc::SYS_clone3, "creates processes"),
    (441, "blocks (epoll_pwait2)"),
];

/// The outcome of probing every number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub probed: u32,
    pub reachable: u32,
    pub enosys: u32,
    pub eperm: u32,
    /// Children killed by SIGSYS (a seccomp filter that kills or traps).
    pub sigsys: u32,
}

/// How one probe child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

impl Census {
    pub fn count(&mut self, outcome: Outcome) {
        self.probed += 1;
        match outcome {
            Outcome::Exited(libc::ENOSYS) => self.enosys += 1,
            Outcome::Exited(libc::EPERM) => self.eperm += 1,
            Outcome::Signaled(libc::SIGSYS) => self.sigsys += 1,
            Outcome::Exited(_) | Outcome::Signaled(_) => self.reachable += 1,
        }
    }
}

pub fn is_denied(nr: i64) -> bool {
    DENY.iter().any(|(n, _)| *n == nr)
}

/// Probes 0..=[`LAST`] minus [`DENY`]. A number whose child cannot be forked is skipped
/// (not counted as probed).
pub fn census() -> Census {
    let mut census = Census::default();
    for nr in (0..=LAST).filter(|nr| !is_denied(*nr)) {
        if let Some(outcome) = probe_one(nr) {
            census.count(outcome);
        }
    }
    census
}

fn probe_one(nr: i64) -> Option<Outcome> {
    match sys::fork().ok()? {
        Fork::Child => child(nr),
        Fork::Parent(pid) => {
            let (_, status) = sys::wait(pid).ok()??;
            Some(if libc::WIFSIGNALED(status) {
                Outcome::Signaled(libc::WTERMSIG(status))
            } else {
                Outcome::Exited(libc::WEXITSTATUS(status))
            })
        }
    }
}

/// Calls `nr` with every argument -1 and exits with the errno (0 on success).
fn child(nr: i64) -> ! {
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: CHILD_TIMER_US.into(),
        },
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: integer prctl; setrlimit and setitimer read valid structs. Not dumpable and
    // no core limit: a child killed by SIGSYS or SIGSEGV writes no core file anywhere.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::setrlimit(libc::RLIMIT_CORE, &raw const no_core);
        libc::setitimer(libc::ITIMER_REAL, &raw const timer, std::ptr::null_mut());
    }
    let bad: libc::c_long = -1;
    // SAFETY: only numbers outside DENY get here, called with invalid arguments in a
    // throw-away child: at worst it faults or is killed, which the parent records.
    let rc = unsafe { libc::syscall(nr, bad, bad, bad, bad, bad, bad) };
    let code = if rc == -1 {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(255)
            .min(255)
    } else {
        0
    };
    sys::exit_now(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_list_is_sane() {
        for (nr, why) in DENY {
            assert!((0..=LAST).contains(nr), "{nr} out of range");
            assert!(!why.is_empty());
            assert_eq!(
                DENY.iter().filter(|(n, _)| n == nr).count(),
                1,
                "{nr} twice"
            );
        }
        // What would end, hang or escape the probe must be there.
        for must in [
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_rt_sigreturn,
            libc::SYS_pause,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_kill,
            libc::SYS_tkill,
            libc::SYS_tgkill,
            libc::SYS_reboot,
            libc::SYS_vhangup,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_nanosleep,
            libc::SYS_select,
            libc::SYS_poll,
            libc::SYS_wait4,
        ] {
            assert!(is_denied(must), "{must} is not denied");
        }
        // The calls the probe is about stay in.
        for keep in [
            libc::SYS_getppid,
            libc::SYS_mount,
            libc::SYS_syslog,
            libc::SYS_ptrace,
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_bpf,
            libc::SYS_unshare,
        ] {
            assert!(!is_denied(keep), "{keep} is denied");
        }
    }

    #[test]
    fn outcomes_are_classified() {
        let mut c = Census::default();
        c.count(Outcome::Exited(libc::ENOSYS));
        c.count(Outcome::Exited(libc::EPERM));
        c.count(Outcome::Signaled(libc::SIGSYS));
        c.count(Outcome::Exited(libc::EBADF));
        c.count(Outcome::Exited(0));
        c.count(Outcome::Signaled(libc::SIGALRM));
        assert_eq!(
            c,
            Census {
                probed: 6,
                reachable: 3,
                enosys: 1,
                eperm: 1,
                sigsys: 1,
            }
        );
    }
}
