//! The agent's one owner of `waitpid`.
//!
//! In a guest the agent is PID 1 and inherits every orphan; on the host it is a child
//! subreaper. Either way a process may exit before anyone asks for its status, and a
//! status reaped by one `waitpid(-1)` is gone for everyone else. So a single task reaps on
//! SIGCHLD and hands each status to whoever waits for that PID — before or after the exit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// Statuses nobody has asked for yet are kept, oldest dropped first past this many
/// (orphans reparented to PID 1 would otherwise pile up).
const MAX_UNCLAIMED: usize = 4096;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + signal number when a signal killed it (shell convention).
    pub status: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub at: SystemTime,
}

impl Exit {
    fn from_wait(status: WaitStatus) -> Option<Self> {
        let (pid, code, signal) = match status {
            WaitStatus::Exited(pid, code) => (pid, code, None),
            WaitStatus::Signaled(pid, sig, _) => (pid, 128 + sig as i32, Some(sig as i32)),
            _ => return None,
        };
        Some(Self {
            pid: pid.as_raw(),
            status: code,
            signal,
            at: SystemTime::now(),
        })
    }
}

#[derive(Default)]
struct State {
    waiters: HashMap<i32, Vec<oneshot::Sender<Exit>>>,
    unclaimed: HashMap<i32, Exit>,
    order: VecDeque<i32>,
}

/// Cheap to clone; all clones share one reaper.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    /// Starts reaping on SIGCHLD. Must run inside a tokio runtime, before any child exists
    /// whose status matters.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self::default();
        let mut sigchld = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Collects every exited child without blocking.
    pub fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some(exit) = Exit::from_wait(status) {
                        self.deliver(exit);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("waitpid(-1): {e}");
                    return;
                }
            }
        }
    }

    fn deliver(&self, exit: Exit) {
        let mut state = self.state.lock().expect("reaper lock");
        if let Some(waiters) = state.waiters.remove(&exit.pid) {
            for waiter in waiters {
                let _ = waiter.send(exit);
            }
            return;
        }
        if state.unclaimed.insert(exit.pid, exit).is_none() {
            state.order.push_back(exit.pid);
        }
        while state.order.len() > MAX_UNCLAIMED {
            if let Some(old) = state.order.pop_front() {
                state.unclaimed.remove(&old);
            }
        }
    }

    /// Waits for `pid` to exit; returns at once if it already has. Several waiters of one PID
    /// all get the status.
    pub async fn wait(&self, pid: i32) -> Exit {
        let rx = {
            let mut state = self.state.lock().expect("reaper lock");
            if let Some(exit) = state.unclaimed.remove(&pid) {
                state.order.retain(|p| *p != pid);
                return exit;
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.entry(pid).or_default().push(tx);
            rx
        };
        // The sender lives in `waiters` until delivery, and the reaper never drops it otherwise.
        rx.await
            .expect("reaper keeps waiters until their pid exits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    // One test owns the process's children: waitpid(-1) in a parallel test would steal them.
    // The reaper, not `Child::wait`, collects them: that is what is under test.
    #[allow(clippy::zombie_processes)]
    #[tokio::test]
    async fn statuses_reach_waiters_before_and_after_exit() {
        let reaper = Reaper::start().unwrap();

        let early = Command::new("sh").args(["-c", "exit 42"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exit = reaper.wait(early.id() as i32).await;
        assert_eq!(exit.status, 42);

        let late = Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = late.id() as i32;
        let (a, b) = tokio::join!(reaper.wait(pid), reaper.wait(pid));
        assert_eq!((a.status, b.status), (0, 0));

        let killed = Command::new("sleep").arg("30").spawn().unwrap();
        nix::sys::signal::kill(Pid::from_raw(killed.id() as i32), nix::sys::signal::SIGKILL)
            .unwrap();
        assert_eq!(reaper.wait(killed.id() as i32).await.status, 137);
    }
}
