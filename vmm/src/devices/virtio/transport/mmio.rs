//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2), modern devices only.
//!
//! One 4 KiB window per device. The guest drives feature negotiation, queue setup and device
//! status through 32-bit registers; bytes from 0x100 on are the device's configuration space.
//! Queue notifications normally bypass this code (KVM ioeventfds on QueueNotify); a write that
//! does reach it is processed inline, so the device also works without ioeventfds.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::super::VirtioDevice;
use super::super::{GuestMemory, IrqTrigger, features, status};
use crate::devices::bus::BusDevice;

/// Size of the MMIO window of one device.
pub const MMIO_LEN: u64 = 0x1000;
/// Offset of QueueNotify, where the VMM registers the queue ioeventfds.
pub const NOTIFY_REG_OFFSET: u64 = 0x50;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5741_5244; // "WARD"
const CONFIG_SPACE_OFFSET: u64 = 0x100;

mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    irq: Arc<IrqTrigger>,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    device_status: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_status", &self.device_status)
            .field("queue_sel", &self.queue_sel)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Puts `device` behind a register window. `mem` is handed to the device when the driver
    /// activates it.
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, mem: GuestMemory) -> Self {
        let irq = lock(&device).state().irq.clone();
        Self {
            device,
            mem,
            irq,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            device_status: 0,
        }
    }

    /// The EventFd to register as the device's irqfd.
    pub fn irq_evt(&self) -> Result<EventFd, std::io::Error> {
        self.irq.eventfd().try_clone()
    }

    /// One EventFd per queue, to register as an ioeventfd on QueueNotify
    /// ([`NOTIFY_REG_OFFSET`]) with the queue index as datamatch.
    pub fn queue_evts(&self) -> Result<Vec<(EventFd, u32)>, std::io::Error> {
        let dev = lock(&self.device);
        dev.state()
            .queue_evts
            .iter()
            .enumerate()
            .map(|(i, e)| Ok((e.try_clone()?, i as u32)))
            .collect()
    }

    /// The Status register, for tests and introspection.
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    fn has_status(&self, bits: u32) -> bool {
        self.device_status & bits == bits
    }

    /// Queue registers may only change while the driver sets the device up.
    fn queue_config_allowed(&self) -> bool {
        self.has_status(status::FEATURES_OK) && !self.has_status(status::DRIVER_OK)
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let dev = lock(&self.device);
        let state = dev.state();
        let queue = state.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => dev.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => state.avail_features as u32,
                1 => (state.avail_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.irq.status(),
            reg::STATUS => self.device_status,
            // No shared memory regions: a length of all ones says "absent".
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => state.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown or write-only register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_reg(offset, value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.irq.ack(value),
            reg::STATUS => self.write_status(value),
            _ => log::debug!("virtio-mmio: write {value:#x} to read-only or unknown {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.has_status(status::DRIVER) || self.has_status(status::FEATURES_OK) {
            log::warn!(
                "virtio-mmio: DriverFeatures written in status {:#x}",
                self.device_status
            );
            return;
        }
        let mut dev = lock(&self.device);
        let state = dev.state_mut();
        let (shift, mask) = match self.driver_features_sel {
            0 => (0, 0xffff_ffff),
            1 => (32, 0xffff_ffff_0000_0000),
            _ => return,
        };
        // The driver may only accept what the device offers.
        let accepted = (u64::from(value) << shift) & state.avail_features;
        state.acked_features = (state.acked_features & !mask) | accepted;
    }

    fn write_queue_reg(&mut self, offset: u64, value: u32) {
        // Linux disables queues one by one (QueueReady = 0) when tearing a device down, after
        // DRIVER_OK; that is always allowed.
        let disabling = offset == reg::QUEUE_READY && value == 0;
        if !self.queue_config_allowed() && !disabling {
            log::warn!(
                "virtio-mmio: queue register {offset:#x} written in status {:#x}",
                self.device_status
            );
            return;
        }
        let mut dev = lock(&self.device);
        let Some(q) = dev.state_mut().queues.get_mut(self.queue_sel as usize) else {
            log::warn!(
                "virtio-mmio: queue register written for queue {}",
                self.queue_sel
            );
            return;
        };
        match offset {
            // virtio-queue ignores sizes above the maximum or not a power of two; such a
            // queue then fails validation at DRIVER_OK.
            reg::QUEUE_NUM => q.set_size(value as u16),
            reg::QUEUE_READY => q.set_ready(value == 1),
            reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
            reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
            reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(value), None),
            reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(value)),
            reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(value), None),
            reg::QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn notify(&mut self, index: u32) {
        let mut dev = lock(&self.device);
        if !dev.state().is_activated() || index as usize >= dev.state().queues.len() {
            log::debug!("virtio-mmio: ignoring notification of queue {index}");
            return;
        }
        dev.process_queue(index as usize);
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            lock(&self.device).reset();
            self.device_status = 0;
            self.device_features_sel = 0;
            self.driver_features_sel = 0;
            self.queue_sel = 0;
            return;
        }
        // The driver only ever adds bits (virtio 1.2, 3.1.1); anything else is a broken driver.
        if value & self.device_status != self.device_status {
            log::warn!(
                "virtio-mmio: status {value:#x} clears bits of {:#x}",
                self.device_status
            );
            return;
        }
        let new_bits = value & !self.device_status;
        let mut accepted = value;
        if new_bits & status::FEATURES_OK != 0 {
            let dev = lock(&self.device);
            // Modern only: a driver without VERSION_1 must see FEATURES_OK refused.
            if !dev.state().has_feature(features::VIRTIO_F_VERSION_1) {
                log::warn!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1");
                accepted &= !status::FEATURES_OK;
            }
        }
        if new_bits & status::DRIVER_OK != 0 {
            if self.has_status(status::FEATURES_OK) || accepted & status::FEATURES_OK != 0 {
                let mut dev = lock(&self.device);
                if let Err(e) = dev.activate(self.mem.clone()) {
                    log::error!("virtio-mmio: cannot activate device: {e}");
                    accepted = (accepted & !status::DRIVER_OK) | status::DEVICE_NEEDS_RESET;
                }
            } else {
                accepted &= !status::DRIVER_OK;
            }
        }
        self.device_status = accepted;
    }
}

fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    // A panic while holding the lock already aborted the operation; the device state is still
    // memory-safe, so keep serving rather than take the VMM down.
    device
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            if offset < MMIO_LEN {
                lock(&self.device).read_config(offset - CONFIG_SPACE_OFFSET, data);
            } else {
                data.fill(0);
            }
            return;
        }
        // Registers are 32 bits wide and must be accessed as such (4.2.2.2).
        if data.len() != 4 || offset % 4 != 0 {
            log::warn!(
                "virtio-mmio: {}-byte read at register offset {offset:#x}",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            if offset < MMIO_LEN {
                lock(&self.device).write_config(offset - CONFIG_SPACE_OFFSET, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!(
                "virtio-mmio: {}-byte write at register offset {offset:#x}",
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            log::warn!("virtio-mmio: unaligned register write at {offset:#x}");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
