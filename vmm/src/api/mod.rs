//! The control API: HTTP+JSON on a Unix socket, served by its own thread.
//!
//! `GET /vm` (state, boot times, exit counts), `PUT /vm/actions` (`pause`, `resume`,
//! `shutdown`), `GET /metrics` (with per-device counters), `GET|PUT /drives/{id}` (swap a
//! drive's backing image while the guest runs).

pub mod http;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::devices::attach::DevicesSnapshot;
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

/// `GET /metrics`: the VMM's counters and, under `devices`, each virtio device's.
#[derive(Debug, Clone, Serialize)]
pub struct FullMetrics {
    #[serde(flatten)]
    pub vm: MetricsSnapshot,
    pub devices: DevicesSnapshot,
}

/// `PUT /drives/{id}` body: attach `path` (or empty the slot with `null`/absent) and set the
/// serial the guest reads.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub serial: Option<String>,
}

fn drive(req: &Request, id: &str, vm: &VmHandles) -> Response {
    let Some(d) = vm.devices.drive(id) else {
        return Response::fault(404, format!("no drive {id:?}"));
    };
    match req.method.as_str() {
        "GET" => Response::json(200, &vm.devices.drive_info(d)),
        "PUT" => {
            let update = match serde_json::from_slice::<DriveUpdate>(&req.body) {
                Ok(u) => u,
                Err(e) => return Response::fault(400, format!("PUT /drives/{id} body: {e}")),
            };
            let swapped = d
                .block
                .lock()
                .expect("block lock")
                .swap_backend(update.path.as_deref(), update.serial.as_deref());
            match swapped {
                Ok(()) => Response::no_content(),
                Err(e) => Response::fault(400, e.to_string()),
            }
        }
        m => Response::fault(405, format!("{m} is not allowed on {}", req.path)),
    }
}

/// Dispatches one request.
pub fn route(req: &Request, vm: &VmHandles) -> Response {
    if let Some(id) = req.path.strip_prefix("/drives/") {
        return drive(req, id, vm);
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/vm") => Response::json(200, &vm_info(vm)),
        ("GET", "/metrics") => Response::json(
            200,
            &FullMetrics {
                vm: vm.metrics.snapshot(),
                devices: vm.devices.snapshot(),
            },
        ),
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
            devices: Arc::default(),
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
        let m = route(&req("GET", "/metrics", ""), &vm);
        let m: serde_json::Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
        assert!(
            m["exits"].is_u64() && m["devices"]["drives"].is_object(),
            "{m}"
        );
        let bad = route(&req("PUT", "/vm/actions", r#"{"action":"pause"}"#), &vm);
        assert_eq!(bad.status, 400);
        assert!(bad.body.unwrap().contains("unknown field `action`"));
    }

    #[test]
    fn drive_swap() {
        use crate::devices::attach::{DriveHandle, VirtioDevices};
        use crate::devices::virtio::block::{Block, BlockConfig};
        use crate::machine::MmioSlot;
        use std::sync::Mutex;

        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("layer.img");
        std::fs::write(&img, vec![0u8; 8192]).unwrap();
        let block = Block::new(BlockConfig {
            drive_id: "layer0".into(),
            read_only: true,
            ..BlockConfig::default()
        })
        .unwrap();
        let mut vm = handles();
        vm.devices = Arc::new(VirtioDevices {
            drives: vec![DriveHandle {
                id: "layer0".into(),
                block: Arc::new(Mutex::new(block)),
                slot: MmioSlot {
                    base: 0xd000_0000,
                    gsi: 5,
                },
            }],
            ..VirtioDevices::default()
        });
        let info = |vm: &VmHandles| {
            let r = route(&req("GET", "/drives/layer0", ""), vm);
            assert_eq!(r.status, 200);
            serde_json::from_str::<serde_json::Value>(r.body.as_deref().unwrap()).unwrap()
        };
        assert_eq!(info(&vm)["capacity_sectors"], 0);
        let body = format!(r#"{{"path": "{}", "serial": "layer-a"}}"#, img.display());
        assert_eq!(route(&req("PUT", "/drives/layer0", &body), &vm).status, 204);
        let i = info(&vm);
        assert_eq!(
            (i["capacity_sectors"].as_u64(), i["read_only"].as_bool()),
            (Some(16), Some(true))
        );
        let missing = route(
            &req("PUT", "/drives/layer0", r#"{"path": "/nonexistent/x.img"}"#),
            &vm,
        );
        assert_eq!(missing.status, 400);
        assert!(missing.body.unwrap().contains("/nonexistent/x.img"));
        // A failed swap keeps the previous image.
        assert_eq!(info(&vm)["capacity_sectors"], 16);
        let bad = route(
            &req("PUT", "/drives/layer0", r#"{"read_only": false}"#),
            &vm,
        );
        assert_eq!(bad.status, 400);
        assert_eq!(route(&req("PUT", "/drives/nope", "{}"), &vm).status, 404);
        assert_eq!(route(&req("PUT", "/drives/layer0", "{}"), &vm).status, 204);
        assert_eq!(info(&vm)["path"], serde_json::Value::Null);
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
