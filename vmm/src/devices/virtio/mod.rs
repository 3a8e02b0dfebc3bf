//! Virtio devices: the device model every virtio device implements ([`VirtioDevice`]), the
//! feature, status and interrupt bits shared by all of them, and one folder per device.
//!
//! A device is shared as `Arc<Mutex<…>>` between the virtio-mmio transport (driven by vCPU
//! exits), the VMM's event loop (queue notifications) and the API (block backing-file swap).
//!
//! # Wiring a device into the VMM
//!
//! ```text
//! let blk = Arc::new(Mutex::new(Block::new(BlockConfig { drive_id, path, read_only, serial, direct_io })?));
//! // or Vsock::new(cid, VsockUnixBackend::new(&uds_path, cid)?)?, or Rng::new()?
//! let transport = MmioTransport::new(blk.clone(), guest_memory.clone());
//! let irq_evt = transport.irq_evt()?;          // register as irqfd on the slot's GSI
//! let notify = transport.queue_evts()?;        // (EventFd, queue index): ioeventfds on
//!                                              // base + NOTIFY_REG_OFFSET, datamatch = index
//! add_mmio_device(Arc::new(Mutex::new(transport)), &irq_evt, &notify)?;  // MMIO_LEN window
//! event_manager.add_subscriber(blk.clone());   // Arc<Mutex<Block>> is a MutEventSubscriber
//! // API: blk.lock().unwrap().swap_backend(Some(path), Some(serial))?   (PUT /drives/{id})
//! // Metrics: blk.lock().unwrap().metrics().snapshot()   (serde::Serialize)
//! ```
//!
//! Lock order: transport, then device. Nothing in a device locks its transport.

pub mod block;
pub mod metrics;
pub mod queue;
pub mod rng;
pub mod transport;
pub mod vsock;

#[cfg(test)]
pub(crate) mod test_utils;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Guest memory as the VMM core provides it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Virtio device IDs (virtio 1.2, section 5).
pub mod device_type {
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
}

/// Feature bits common to every device (virtio 1.2, section 6).
pub mod features {
    pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
    pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
    pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
}

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Bits of the virtio-mmio InterruptStatus register.
pub mod interrupt {
    /// The device used a buffer in a virtqueue.
    pub const USED_BUFFER: u32 = 1;
    /// The device configuration space changed.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// Errors of the common device plumbing.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("cannot create an eventfd for {what}: {source}")]
    EventFd {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("invalid maximum queue size {size} for queue {index}")]
    QueueSize { index: usize, size: u16 },
}

/// Errors activating a device when the driver sets DRIVER_OK.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {index} is not ready or lies outside guest memory")]
    InvalidQueue { index: usize },
    #[error("the driver did not accept VIRTIO_F_VERSION_1 (acked features {acked:#x})")]
    LegacyDriver { acked: u64 },
    #[error("device-specific activation failed: {0}")]
    Device(String),
}

/// The interrupt line of one device: the InterruptStatus bits the guest reads back, and the
/// EventFd that KVM turns into a GSI edge (irqfd).
#[derive(Debug)]
pub struct IrqTrigger {
    status: AtomicU32,
    evt: EventFd,
}

impl IrqTrigger {
    pub fn new() -> Result<Self, VirtioError> {
        Ok(Self {
            status: AtomicU32::new(0),
            evt: EventFd::new(EFD_NONBLOCK).map_err(|source| VirtioError::EventFd {
                what: "the interrupt",
                source,
            })?,
        })
    }

    /// The EventFd to register with KVM as an irqfd for the device's GSI.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// The InterruptStatus register value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: the guest clears the bits it handled.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Sets `bits` (see [`interrupt`]) and raises the interrupt.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        // A failed write means the counter is saturated, i.e. an interrupt is already pending.
        if let Err(e) = self.evt.write(1) {
            log::warn!("virtio: cannot raise interrupt: {e}");
        }
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// The state every virtio device has: features, queues, their notification EventFds,
/// interrupt, and the guest memory once the driver has activated it.
#[derive(Debug)]
pub struct DeviceState {
    pub avail_features: u64,
    pub acked_features: u64,
    pub queues: Vec<Queue>,
    /// One per queue: KVM signals it on a QueueNotify write (ioeventfd, datamatch = index).
    pub queue_evts: Vec<EventFd>,
    pub irq: Arc<IrqTrigger>,
    /// `Some` between DRIVER_OK and reset.
    pub mem: Option<GuestMemory>,
    pub config_generation: u32,
}

impl DeviceState {
    pub fn new(avail_features: u64, queue_max_sizes: &[u16]) -> Result<Self, VirtioError> {
        let mut queues = Vec::with_capacity(queue_max_sizes.len());
        let mut queue_evts = Vec::with_capacity(queue_max_sizes.len());
        for (index, &size) in queue_max_sizes.iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| VirtioError::QueueSize { index, size })?);
            queue_evts.push(
                EventFd::new(EFD_NONBLOCK).map_err(|source| VirtioError::EventFd {
                    what: "a queue notification",
                    source,
                })?,
            );
        }
        Ok(Self {
            avail_features: avail_features | features::VIRTIO_F_VERSION_1,
            acked_features: 0,
            queues,
            queue_evts,
            irq: Arc::new(IrqTrigger::new()?),
            mem: None,
            config_generation: 0,
        })
    }

    pub fn is_activated(&self) -> bool {
        self.mem.is_some()
    }

    pub fn has_feature(&self, bit: u64) -> bool {
        self.acked_features & bit != 0
    }

    /// Tells the guest about a configuration change (e.g. a new disk size).
    pub fn signal_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.is_activated() {
            self.irq.trigger(interrupt::CONFIG_CHANGE);
        }
    }
}

/// The device model behind a virtio transport.
pub trait VirtioDevice: Send {
    /// Virtio device ID (see [`device_type`]).
    fn device_type(&self) -> u32;
    fn state(&self) -> &DeviceState;
    fn state_mut(&mut self) -> &mut DeviceState;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (most devices ignore it).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Processes whatever the driver made available on queue `index`.
    fn process_queue(&mut self, index: usize);
    /// Device-specific work once the driver set DRIVER_OK and `state().mem` is set.
    fn on_activate(&mut self) -> Result<(), ActivateError> {
        Ok(())
    }
    /// Device-specific work when the driver resets the device (status 0).
    fn on_reset(&mut self) {}

    /// Called by the transport on DRIVER_OK.
    fn activate(&mut self, mem: GuestMemory) -> Result<(), ActivateError> {
        let state = self.state_mut();
        if !state.has_feature(features::VIRTIO_F_VERSION_1) {
            return Err(ActivateError::LegacyDriver {
                acked: state.acked_features,
            });
        }
        let event_idx = state.has_feature(features::VIRTIO_RING_F_EVENT_IDX);
        for (index, q) in state.queues.iter_mut().enumerate() {
            // Drivers may leave queues they do not use unconfigured; those are never processed.
            if q.ready() && !q.is_valid(&mem) {
                return Err(ActivateError::InvalidQueue { index });
            }
            q.set_event_idx(event_idx);
        }
        state.mem = Some(mem);
        if let Err(e) = self.on_activate() {
            self.state_mut().mem = None;
            return Err(e);
        }
        Ok(())
    }

    /// Called by the transport when the driver writes 0 to Status.
    fn reset(&mut self) {
        let state = self.state_mut();
        state.acked_features = 0;
        state.mem = None;
        state.irq.clear();
        for q in &mut state.queues {
            q.reset();
        }
        self.on_reset();
    }
}

/// Copies the part of `config` at `offset` into `data`; bytes beyond it read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
