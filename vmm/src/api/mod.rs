//! The control API: HTTP+JSON on a Unix socket, served by its own thread.
//!
//! `GET /vm` (state, boot times, exit counts), `PUT /vm/actions` (`pause`, `resume`,
//! `shutdown`), `GET /metrics`. Devices get their own top-level resources (`/drives/<id>`,
//! `/vsock`) next to these, so adding them reshapes nothing.

pub mod http;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::machine::VmHandles;
use crate::metrics::MetricsSnapshot;
use crate::vstate::vcpu::RunState;
use http::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("binding the API socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the API thread: {0}")]
    Thread(std::io::Error),
}

/// `GET /vm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmInfo {
    /// `running` or `paused`.
    pub state: String,
    pub vcpus: u8,
    pub mem_mib: u32,
    pub boot: BootTimes,
    pub exits: ExitCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootTimes {
    /// Microseconds from VMM start to the first KVM_RUN.
    pub first_run_us: u64,
    /// Microseconds from VMM start to the guest's boot-port write; null before it.
    pub guest_ready_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitCounts {
    pub total: u64,
    pub pio: u64,
    pub mmio: u64,
}

/// `PUT /vm/actions` body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Pause,
    Resume,
    Shutdown,
}

/// Binds `path` (replacing a stale socket) and serves it on a thread for the life of the
/// process.
pub fn serve(path: &Path, vm: VmHandles) -> Result<(), ApiError> {
    // A socket file left by a previous VMM would make bind fail with EADDRINUSE.
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                handle_connection(&stream, &vm);
            }
        })
        .map_err(ApiError::Thread)?;
    Ok(())
}

fn handle_connection(stream: &UnixStream, vm: &VmHandles) {
    let response = match http::read_request(stream) {
        Ok(req) => route(&req, vm),
        Err(http::HttpError::TooLarge(what)) => {
            Response::fault(413, format!("request {what} too large"))
        }
        Err(e) => Response::fault(400, e.to_string()),
    };
    // The client may have gone; nothing to do about it.
    let _ = response.write_to(stream);
}

/// Dispatches one request.
pub fn route(req: &Request, vm: &VmHandles) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/vm") => Response::json(200, &vm_info(vm)),
        ("GET", "/metrics") => Response::json(200, &vm.metrics.snapshot()),
        ("PUT", "/vm/actions") => match serde_json::from_slice::<Action>(&req.body) {
            Ok(action) => act(action.action_type, vm),
            Err(e) => Response::fault(400, format!("PUT /vm/actions body: {e}")),
        },
        (_, "/vm" | "/metrics" | "/vm/actions") => Response::fault(
            405,
            format!("{} is not allowed on {}", req.method, req.path),
        ),
        _ => Response::fault(404, format!("no resource at {}", req.path)),
    }
}

fn act(action: ActionType, vm: &VmHandles) -> Response {
    match action {
        ActionType::Pause => vm.vcpus.pause(),
        ActionType::Resume => vm.vcpus.resume(),
        ActionType::Shutdown => {
            vm.shutdown.store(true, Ordering::Relaxed);
            if let Err(e) = vm.exit_evt.write(1) {
                return Response::fault(500, format!("signalling the VMM to stop: {e}"));
            }
        }
    }
    Response::no_content()
}

fn vm_info(vm: &VmHandles) -> VmInfo {
    let m: MetricsSnapshot = vm.metrics.snapshot();
    VmInfo {
        state: match vm.vcpus.state() {
            RunState::Running => "running",
            RunState::Paused => "paused",
        }
        .into(),
        vcpus: vm.vcpu_count,
        mem_mib: vm.mem_mib,
        boot: BootTimes {
            first_run_us: m.first_run_us,
            guest_ready_us: (m.guest_ready_us != 0).then_some(m.guest_ready_us),
        },
        exits: ExitCounts {
            total: m.exits,
            pio: m.pio_exits,
            mmio: m.mmio_exits,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    use super::*;
    use crate::metrics::Metrics;
    use crate::vstate::vcpu::VcpuControl;

    fn handles() -> VmHandles {
        VmHandles {
            metrics: Arc::new(Metrics::default()),
            vcpus: Arc::new(VcpuControl::default()),
            shutdown: Arc::new(AtomicBool::new(false)),
            exit_evt: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            vcpu_count: 2,
            mem_mib: 256,
        }
    }

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn routes() {
        let vm = handles();
        let r = route(&req("GET", "/vm", ""), &vm);
        assert_eq!(r.status, 200);
        let info: VmInfo = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            (info.state.as_str(), info.vcpus, info.mem_mib),
            ("running", 2, 256)
        );
        assert_eq!(info.boot.guest_ready_us, None);
        assert_eq!(route(&req("GET", "/metrics", ""), &vm).status, 200);
        assert_eq!(route(&req("DELETE", "/vm", ""), &vm).status, 405);
        assert_eq!(route(&req("GET", "/drives/rootfs", ""), &vm).status, 404);
        let bad = route(&req("PUT", "/vm/actions", r#"{"action":"pause"}"#), &vm);
        assert_eq!(bad.status, 400);
        assert!(bad.body.unwrap().contains("unknown field `action`"));
    }

    #[test]
    fn shutdown_signals_the_vmm() {
        let vm = handles();
        let r = route(
            &req("PUT", "/vm/actions", r#"{"action_type":"shutdown"}"#),
            &vm,
        );
        assert_eq!(r.status, 204);
        assert!(vm.shutdown.load(Ordering::Relaxed));
        assert_eq!(vm.exit_evt.read().unwrap(), 1);
    }
}
