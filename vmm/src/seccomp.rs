//! The seccomp filter every ward-vmm thread runs under once the guest starts: the system
//! calls the event loop, the vCPUs, the API, the console and the virtio devices need, and
//! nothing else (no exec, no new listening sockets, no file opens beyond what is listed).
//!
//! A blocked call stops the VMM with exit code 3 and names the system call on stderr, so a
//! device that needs a new call says so instead of dying silently: add it to [`ALLOWED`].

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(seccompiler::Error),
    #[error("installing the SIGSYS handler: {0}")]
    Handler(vmm_sys_util::errno::Error),
}

/// System calls ward-vmm makes after setup.
const ALLOWED: &[i64] = &[
    // vCPUs, irqfd/ioeventfd, terminals
    libc::SYS_ioctl,
    // event loop, eventfds, console, API
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_eventfd2,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // virtio backends: block files, vsock's host Unix sockets, rate-limit timers
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    // metrics (/proc/self/status, /proc/self/smaps), the API socket's removal at the end
    libc::SYS_openat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_unlink,
    // memory and threads (vCPU threads start after the filter is in place)
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_prctl,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_futex,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // signals: the vCPU kick, and this filter's own report
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The system call numbers ward-vmm may make once its filter is in place: the host kernel's
/// attack surface as seen from a guest that has taken over the VMM.
pub fn allowed_syscalls() -> &'static [i64] {
    ALLOWED
}

/// The compiled filter: allow [`ALLOWED`], trap everything else.
pub fn filter() -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Build)?;
    filter.try_into().map_err(SeccompError::Build)
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // siginfo_t for SIGSYS: after signo/errno/code and padding (16 bytes) come the call
    // address (8 bytes) and the system call number (int).
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler; offset 24 is
    // `si_syscall` in its SIGSYS layout.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let mut msg = *b"ward-vmm: seccomp blocked system call       \n";
    let mut n = nr.unsigned_abs();
    let mut at = msg.len() - 2;
    loop {
        msg[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
        at -= 1;
    }
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is on this stack.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(3);
    }
}

/// Installs the filter on every thread of the process.
pub fn install() -> Result<(), SeccompError> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(SeccompError::Handler)?;
    let program = filter()?;
    seccompiler::apply_filter_all_threads(&program).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child: the filter in place, an allowed call works, a call outside the
    /// list ends the process with exit 3 (and its number on stderr).
    #[test]
    fn blocks_what_is_not_listed() {
        let program = filter().unwrap();
        assert!(program.len() > ALLOWED.len());
        // SAFETY: nextest runs each test in its own process; the child only makes system
        // calls (no allocation) before it exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain system calls in the child; each result is checked by exiting.
            unsafe {
                if vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys).is_err()
                    || seccompiler::apply_filter(&program).is_err()
                {
                    libc::_exit(10);
                }
                if libc::syscall(libc::SYS_getpid) <= 0 {
                    libc::_exit(11);
                }
                libc::syscall(libc::SYS_getppid);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 3);
    }
}
