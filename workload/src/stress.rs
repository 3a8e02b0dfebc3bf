//! The workloads that push against the sandbox's limits instead of timing something: an idle
//! process (memory per idle sandbox), a fork bomb (pids limit) and a memory hog (memory
//! limit). Each must stop on its own and leave nothing running behind it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::sys::{self, Error, Fork};

/// Prints `ready` and sleeps until SIGTERM, SIGINT or SIGKILL. The handlers matter when
/// this is a container's PID 1, which the kernel shields from signals it does not handle.
pub fn idle() -> Result<(), Error> {
    extern "C" fn leave(_: libc::c_int) {
        sys::exit_now(0);
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `leave` is an async-signal-safe handler (it only calls _exit).
        let old = unsafe { libc::signal(signal, leave as *const () as libc::sighandler_t) };
        if old == libc::SIG_ERR {
            return Err(Error::last(format!(
                "installing a handler for signal {signal}"
            )));
        }
    }
    sys::write_all_fd(1, b"ready\n").map_err(|e| Error::new("writing `ready` to stdout", e))?;
    loop {
        // SAFETY: pause has no preconditions; it returns only after a handled signal.
        unsafe { libc::pause() };
    }
}

/// Counters shared by every process of the fork tree (a MAP_SHARED page survives fork).
#[repr(C)]
struct TreeCounters {
    forks: AtomicU64,
    eagain: AtomicU64,
    other_errors: AtomicU64,
    /// Processes started or being started; never above `max_procs`.
    started: AtomicU64,
}

/// A process tree that forks as fast as it can for `seconds`: every process forks in a loop
/// and every child does the same. EAGAIN (the pids limit, or RLIMIT_NPROC) is counted and
/// retried. `max_procs` caps the tree on its own so that running it outside any pids limit
/// cannot take the machine down. The tree runs in its own process group with this process
/// as its subreaper; at the end the group is SIGKILLed and every process reaped.
pub fn forkbomb(seconds: u64, max_procs: u64) -> Result<Value, Error> {
    let size = std::mem::size_of::<TreeCounters>();
    // SAFETY: a fresh anonymous shared mapping; no existing memory is touched.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(Error::last(format!("mapping {size} shared bytes")));
    }
    // SAFETY: the mapping is page-aligned, zero-filled (a valid TreeCounters: all atomics
    // zero) and lives until the munmap below, after every other process has been reaped.
    let counters = unsafe { &*page.cast::<TreeCounters>() };

    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::last("becoming a child subreaper"));
    }
    let deadline = sys::monotonic_ns() + seconds * 1_000_000_000;
    let leader = match sys::fork().map_err(|e| Error::new("forking the tree's leader", e))? {
        Fork::Child => {
            // SAFETY: setpgid on ourselves with integer arguments.
            unsafe { libc::setpgid(0, 0) };
            bomb(counters, max_procs)
        }
        Fork::Parent(pid) => pid,
    };
    // Also from this side, so the group exists before the kill below whatever runs first.
    // SAFETY: setpgid on our own child with integer arguments.
    unsafe { libc::setpgid(leader, leader) };
    sys::sleep_until_ns(deadline);

    // Orphans are reparented to us (subreaper), so ECHILD means the whole tree is gone.
    // Re-sending after each reap covers a child a racing fork created just before the kill.
    loop {
        sys::kill(-leader, libc::SIGKILL);
        match sys::wait(-1) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(Error::new("reaping the fork tree", e)),
        }
    }
    let result = json!({
        "workload": "forkbomb",
        "forks": counters.forks.load(Ordering::Relaxed),
        "eagain": counters.eagain.load(Ordering::Relaxed),
        "other_errors": counters.other_errors.load(Ordering::Relaxed),
        "max_procs": max_procs,
        "capped": counters.started.load(Ordering::Relaxed) >= max_procs,
    });
    // SAFETY: `page` is the mapping made above and no process uses it any more.
    unsafe { libc::munmap(page, size) };
    Ok(result)
}

/// The body of every process in the tree; never returns (the parent SIGKILLs the tree).
fn bomb(counters: &TreeCounters, max_procs: u64) -> ! {
    loop {
        if counters.started.fetch_add(1, Ordering::Relaxed) >= max_procs {
            counters.started.fetch_sub(1, Ordering::Relaxed);
            // The cap is reached for good (no process of the tree exits): wait to be killed.
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        match sys::fork() {
            Ok(Fork::Child) => {}
            Ok(Fork::Parent(_)) => {
                counters.forks.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.started.fetch_sub(1, Ordering::Relaxed);
                let counter = if e.raw_os_error() == Some(libc::EAGAIN) {
                    &counters.eagain
                } else {
                    &counters.other_errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

const PAGE: usize = 4096;
const MIB: usize = 1024 * 1024;

/// Maps `mib` MiB and writes one byte per page, pass after pass, for `seconds`. Each pass
/// writes a new value so every page is dirty again: above the sandbox's memory limit the
/// kernel must reclaim (swap) or OOM-kill, again and again. `touched_mib` counts every MiB
/// written, across passes.
pub fn memhog(mib: u64, seconds: u64) -> Result<Value, Error> {
    let len = mib as usize * MIB;
    // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(Error::last(format!("mapping {mib} MiB")));
    }
    let base = base.cast::<u8>();
    let deadline = sys::monotonic_ns() + seconds * 1_000_000_000;
    let (mut touched_mib, mut passes) = (0u64, 0u64);
    'run: loop {
        passes += 1;
        for m in 0..mib as usize {
            for p in (0..MIB).step_by(PAGE) {
                // SAFETY: `m * MIB + p < len`: inside the mapping made above.
                unsafe { base.add(m * MIB + p).write_volatile(passes as u8) };
            }
            touched_mib += 1;
            if sys::monotonic_ns() >= deadline {
                break 'run;
            }
        }
    }
    // SAFETY: `base`/`len` are the mapping made above, no longer used.
    unsafe { libc::munmap(base.cast(), len) };
    Ok(json!({
        "workload": "memhog",
        "mib": mib,
        "touched_mib": touched_mib,
        "passes": passes,
    }))
}
