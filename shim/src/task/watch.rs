//! What the shim watches for on its own: process exits (TaskExit, after the output has
//! drained) and OOM kills (TaskOOM), for every task of the sandbox.

use std::sync::Arc;
use std::time::Duration;

use ward_agent::protocol::agent;

use super::events::{TaskExit, TaskOOM};
use super::rpc::{container_request, nanos_to_timestamp, no_deadline, now};
use super::service::{Inner, TaskService};
use super::state::Exit;
use crate::sandbox::Sandbox;

/// How long a process's output may keep flowing after it exited (a daemonized child
/// holding stdout) before its exit is reported anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl Inner {
    /// Publishes TaskOOM for `id` if its cgroup counted an OOM kill not reported yet.
    pub(super) async fn report_oom(&self, sb: &dyn Sandbox, id: &str) {
        let mut reported = self.oom_reported.lock().await;
        let kills = match sb
            .agent()
            .rpc()
            .stats_container(sb.agent().ctx(), &container_request(id))
            .await
        {
            Ok(s) => s.oom_kills,
            Err(e) => {
                log::warn!("OOM count of {id}: {e}");
                return;
            }
        };
        let before = reported.get(id).copied().unwrap_or(0);
        if kills > before {
            reported.insert(id.to_owned(), kills);
            let mut oom = TaskOOM::new();
            oom.container_id = id.to_owned();
            self.events.publish(oom).await;
        }
    }
}

impl TaskService {
    /// Turns the agent's OOM kills into TaskOOM events for as long as the agent lives.
    pub(super) fn watch_oom(&self, sb: Arc<dyn Sandbox>) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                match sb
                    .agent()
                    .rpc()
                    .get_oom_event(no_deadline(), &agent::GetOOMEventRequest::new())
                    .await
                {
                    Ok(ev) => inner.report_oom(&*sb, &ev.container_id).await,
                    Err(e) => {
                        if !sb.alive() {
                            return;
                        }
                        log::debug!("GetOOMEvent: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }

    /// Waits for a started process to exit, drains its output, records the exit and
    /// publishes TaskExit.
    pub(super) fn watch_exit(&self, sb: Arc<dyn Sandbox>, id: String, exec: String, pid: u32) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut req = agent::ProcessRequest::new();
            req.container_id.clone_from(&id);
            req.exec_id.clone_from(&exec);
            let exit = match sb.agent().rpc().wait_process(no_deadline(), &req).await {
                Ok(r) => Exit {
                    status: r.exit_status as u32,
                    at: nanos_to_timestamp(r.exited_at_unix_nanos),
                },
                Err(e) => {
                    log::warn!("waiting for {id}/{exec}: {e}");
                    // The agent died: nothing will reap the container's processes or remove
                    // its cgroup now but the shim.
                    // The supervisor sees the exit a moment after the connection breaks.
                    for _ in 0..50 {
                        if !sb.alive() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if !sb.alive() && exec.is_empty() {
                        super::service::sweep_cgroup(&inner, &id).await;
                    }
                    Exit {
                        status: 255,
                        at: now(),
                    }
                }
            };
            // The agent polls OOM counters; a container killed faster than that would be
            // deleted before its event. A SIGKILLed process is checked here, before its exit.
            if exit.status == 128 + libc::SIGKILL as u32 {
                inner.report_oom(&*sb, &id).await;
            }
            let io = {
                let mut containers = inner.containers.lock().await;
                containers
                    .get_mut(&id)
                    .and_then(|c| c.process_mut(&exec))
                    .and_then(|p| p.io.take())
            };
            if let Some(mut io) = io {
                io.drain(DRAIN_LIMIT).await;
            }
            {
                let containers = inner.containers.lock().await;
                if let Some(p) = containers.get(&id).and_then(|c| c.process(&exec)) {
                    p.exit.send_replace(Some(exit.clone()));
                }
            }
            let mut ev = TaskExit::new();
            ev.container_id.clone_from(&id);
            ev.id = if exec.is_empty() { id } else { exec };
            ev.pid = pid;
            ev.exit_status = exit.status;
            ev.exited_at = Some(exit.at).into();
            inner.events.publish(ev).await;
        });
    }
}
