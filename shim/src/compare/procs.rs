//! Host process bookkeeping for the metrics: a sandbox's process tree, its proportional
//! memory (PSS, so pages shared between sandboxes are split fairly), and waiting for a
//! process that is not our child.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `(pid, ppid)` of every live process.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| ppid_of(&stat))
        {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The ppid field of a `/proc/<pid>/stat` line (the command name may hold spaces and
/// parentheses, so fields are counted after the last `)`).
fn ppid_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `roots` and all their live descendants.
pub fn tree(roots: &[u32]) -> BTreeSet<u32> {
    let parents = parents();
    let mut all: BTreeSet<u32> = roots
        .iter()
        .copied()
        .filter(|p| parents.contains_key(p))
        .collect();
    loop {
        let before = all.len();
        for (pid, ppid) in &parents {
            if all.contains(ppid) {
                all.insert(*pid);
            }
        }
        if all.len() == before {
            return all;
        }
    }
}

/// PSS of one process in KiB (`/proc/<pid>/smaps_rollup`); `None` once it is gone.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss(&text)
}

fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|line| {
        let rest = line.strip_prefix("Pss:")?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Summed PSS in KiB of `roots` and their descendants, and how many processes that was.
pub fn tree_pss_kib(roots: &[u32]) -> (u64, usize) {
    let pids = tree(roots);
    let total = pids.iter().filter_map(|p| pss_kib(*p)).sum();
    (total, pids.len())
}

/// Waits up to `limit` for `pid` (any process, not only a child) to exit. `Ok(false)` on
/// timeout; a pid that is already gone counts as exited.
pub fn wait_gone(pid: u32, limit: Duration) -> std::io::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ESRCH) {
            Ok(true)
        } else {
            Err(err)
        };
    }
    // SAFETY: fd is a fresh pidfd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n > 0 {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends `signal` to `pid`; a pid that is gone is not an error.
pub fn signal(pid: u32, signal: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) has no memory effects; a stale pid is at worst ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_command_name() {
        assert_eq!(ppid_of("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(ppid_of("garbage"), None);
    }

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        let text = "00400000-7fff [rollup]\nRss:                3000 kB\nPss:                1234 kB\nPss_Anon: 5 kB\n";
        assert_eq!(parse_pss(text), Some(1234));
    }

    #[test]
    fn our_own_tree_has_us_and_a_pss() {
        let me = std::process::id();
        assert!(tree(&[me]).contains(&me));
        assert!(pss_kib(me).unwrap() > 0);
    }
}
