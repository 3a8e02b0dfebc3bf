//! Builds the virtio devices a [`VmConfig`] asks for (drives, vsock, rng), maps each in a
//! virtio-mmio slot with its interrupt and queue notifications, puts it on the event loop,
//! and keeps the handles the control API needs: drive swaps and per-device counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::VmConfig;
use crate::devices::virtio::block::{Block, BlockConfig, BlockError};
use crate::devices::virtio::metrics::{DeviceMetrics, DeviceMetricsSnapshot};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::transport::MmioTransport;
use crate::devices::virtio::vsock::{Vsock, VsockError, VsockUnixBackend};
use crate::devices::virtio::{VirtioDevice, VirtioError};
use crate::machine::{MmioSlot, Vmm, VmmError};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("vsock (uds {path}): {source}")]
    Vsock { path: String, source: VsockError },
    #[error("rng: {0}")]
    Rng(VirtioError),
    #[error("{device}: eventfds for the transport: {source}")]
    EventFd {
        device: String,
        source: std::io::Error,
    },
}

/// One drive slot as the API sees it.
#[derive(Debug)]
pub struct DriveHandle {
    pub id: String,
    pub block: Arc<Mutex<Block>>,
    pub slot: MmioSlot,
}

/// `GET /drives/{id}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DriveInfo {
    pub id: String,
    pub path: Option<String>,
    pub read_only: bool,
    /// Size in 512-byte sectors as the guest sees it (0 for an empty slot).
    pub capacity_sectors: u64,
    pub mmio_base: u64,
    pub gsi: u32,
}

/// The virtio devices of one VM.
#[derive(Debug, Default)]
pub struct VirtioDevices {
    pub drives: Vec<DriveHandle>,
    pub(crate) vsock: Option<Arc<DeviceMetrics>>,
    pub(crate) rng: Option<Arc<DeviceMetrics>>,
}

/// Per-device counters in `GET /metrics` under `devices`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DevicesSnapshot {
    /// Keyed by drive id.
    pub drives: BTreeMap<String, DeviceMetricsSnapshot>,
    pub vsock: Option<DeviceMetricsSnapshot>,
    pub rng: Option<DeviceMetricsSnapshot>,
}

impl VirtioDevices {
    pub fn drive(&self, id: &str) -> Option<&DriveHandle> {
        self.drives.iter().find(|d| d.id == id)
    }

    pub fn drive_info(&self, d: &DriveHandle) -> DriveInfo {
        let block = d.block.lock().expect("block lock");
        DriveInfo {
            id: d.id.clone(),
            path: block.path().map(|p| p.display().to_string()),
            read_only: block.read_only(),
            capacity_sectors: block.capacity(),
            mmio_base: d.slot.base,
            gsi: d.slot.gsi,
        }
    }

    pub fn snapshot(&self) -> DevicesSnapshot {
        DevicesSnapshot {
            drives: self
                .drives
                .iter()
                .map(|d| {
                    let m = d.block.lock().expect("block lock").metrics();
                    (d.id.clone(), m.snapshot())
                })
                .collect(),
            vsock: self.vsock.as_ref().map(|m| m.snapshot()),
            rng: self.rng.as_ref().map(|m| m.snapshot()),
        }
    }
}

/// Maps `device` behind a virtio-mmio transport in the next slot and subscribes `events`
/// (the same device, as its queue handler) to the event loop.
fn attach<D>(vmm: &mut Vmm, name: &str, device: Arc<Mutex<D>>) -> Result<MmioSlot, VmmError>
where
    D: VirtioDevice + event_manager::MutEventSubscriber + Send + 'static,
{
    let transport = MmioTransport::new(device.clone(), vmm.guest_memory().clone());
    let fd_err = |source| DeviceError::EventFd {
        device: name.to_owned(),
        source,
    };
    let irq = transport.irq_evt().map_err(fd_err)?;
    let notify = transport.queue_evts().map_err(fd_err)?;
    let slot = vmm.add_mmio_device(Arc::new(Mutex::new(transport)), &irq, &notify)?;
    vmm.add_subscriber(device);
    Ok(slot)
}

/// Creates and maps every device of `config`, drives first so they are `vda`, `vdb`, ...
/// in configuration order.
pub fn attach_all(vmm: &mut Vmm, config: &VmConfig) -> Result<VirtioDevices, VmmError> {
    let mut devices = VirtioDevices::default();
    for d in &config.drives {
        let block = Arc::new(Mutex::new(
            Block::new(BlockConfig {
                drive_id: d.id.clone(),
                path: d.path.clone(),
                read_only: d.read_only,
                serial: d.serial.clone(),
                direct_io: d.direct_io,
            })
            .map_err(DeviceError::from)?,
        ));
        let slot = attach(vmm, &format!("drive {}", d.id), block.clone())?;
        devices.drives.push(DriveHandle {
            id: d.id.clone(),
            block,
            slot,
        });
    }
    if let Some(v) = &config.vsock {
        let vsock_err = |source| DeviceError::Vsock {
            path: v.uds_path.display().to_string(),
            source,
        };
        let backend = VsockUnixBackend::new(&v.uds_path, v.guest_cid)
            .map_err(|e| vsock_err(VsockError::Backend(e)))?;
        let vsock = Vsock::new(v.guest_cid, backend).map_err(vsock_err)?;
        devices.vsock = Some(vsock.metrics());
        attach(vmm, "vsock", Arc::new(Mutex::new(vsock)))?;
    }
    if config.rng {
        let rng = Rng::new().map_err(DeviceError::Rng)?;
        devices.rng = Some(rng.metrics());
        attach(vmm, "rng", Arc::new(Mutex::new(rng)))?;
    }
    Ok(devices)
}
