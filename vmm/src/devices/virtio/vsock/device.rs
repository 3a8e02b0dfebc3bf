//! The virtio-vsock device: the guest CID in config space, the TX queue feeding the backend,
//! and the RX queue filled from it whenever the guest has buffers. The event queue carries
//! nothing (ward never migrates a VM).

use std::io::Write;
use std::sync::Arc;

use virtio_queue::{QueueOwnedT, QueueT};

use super::packet::{MAX_PKT_PAYLOAD, parse_tx, write_header};
use super::unix::{UnixBackendError, VsockUnixBackend};
use crate::devices::virtio::metrics::DeviceMetrics;
use crate::devices::virtio::queue::{add_used, notify_guest};
use crate::devices::virtio::{
    DeviceState, VirtioDevice, VirtioError, device_type, features, read_config_bytes,
};

pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
pub const EVQ: usize = 2;
pub const QUEUE_SIZE: u16 = 256;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock CID {0} is reserved (must be 3 or more)")]
    InvalidCid(u64),
    #[error(transparent)]
    Backend(#[from] UnixBackendError),
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

/// A virtio-vsock device with the hybrid Unix-socket backend.
#[derive(Debug)]
pub struct Vsock {
    cid: u64,
    state: DeviceState,
    backend: VsockUnixBackend,
    metrics: Arc<DeviceMetrics>,
    buf: Vec<u8>,
}

impl Vsock {
    /// A device for guest `cid` whose host side listens on `backend`'s Unix socket.
    pub fn new(cid: u64, backend: VsockUnixBackend) -> Result<Self, VsockError> {
        if cid < 3 || cid > u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(cid));
        }
        Ok(Self {
            cid,
            state: DeviceState::new(
                features::VIRTIO_RING_F_INDIRECT_DESC,
                &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE],
            )?,
            backend,
            metrics: Arc::new(DeviceMetrics::default()),
            buf: vec![0; MAX_PKT_PAYLOAD],
        })
    }

    pub fn cid(&self) -> u64 {
        self.cid
    }

    pub fn backend(&self) -> &VsockUnixBackend {
        &self.backend
    }

    pub fn metrics(&self) -> Arc<DeviceMetrics> {
        self.metrics.clone()
    }

    /// Handles the backend's sockets, then delivers what they produced. Called by the event
    /// loop when the backend's fd is readable.
    pub fn process_backend_events(&mut self) {
        self.backend.process_events();
        self.process_rx();
    }

    fn process_tx(&mut self) {
        let Some(mem) = self.state.mem.clone() else {
            return;
        };
        let q = TXQ;
        if !self.state.queues[q].ready() {
            return;
        }
        let mut used_any = false;
        while let Some(chain) = self.state.queues[q].pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            DeviceMetrics::inc(&self.metrics.requests);
            match chain.reader(&mem) {
                Ok(mut reader) => {
                    let available = reader.available_bytes();
                    match parse_tx(&mut reader, available) {
                        Ok(pkt) => {
                            DeviceMetrics::add(&self.metrics.write_bytes, pkt.payload.len() as u64);
                            self.backend.send_pkt(&pkt);
                        }
                        Err(e) => {
                            DeviceMetrics::inc(&self.metrics.errors);
                            log::debug!("vsock: dropping TX packet: {e}");
                        }
                    }
                }
                Err(e) => {
                    DeviceMetrics::inc(&self.metrics.errors);
                    log::debug!("vsock: dropping TX chain: {e}");
                }
            }
            used_any |= add_used(&mut self.state.queues[q], &mem, head, 0);
        }
        if used_any {
            let irq = self.state.irq.clone();
            notify_guest(&mut self.state.queues[q], &mem, &irq);
        }
    }

    /// Fills guest RX buffers while the backend has packets.
    fn process_rx(&mut self) {
        let Some(mem) = self.state.mem.clone() else {
            return;
        };
        let q = RXQ;
        if !self.state.queues[q].ready() {
            return;
        }
        let mut used_any = false;
        while self.backend.has_rx() {
            let Some(chain) = self.state.queues[q].pop_descriptor_chain(&mem) else {
                // The packet waits in the backend (its socket is not read meanwhile).
                DeviceMetrics::inc(&self.metrics.queue_full);
                break;
            };
            let head = chain.head_index();
            let mut writer = match chain.writer(&mem) {
                Ok(w) => w,
                Err(e) => {
                    DeviceMetrics::inc(&self.metrics.errors);
                    log::debug!("vsock: unusable RX chain: {e}");
                    used_any |= add_used(&mut self.state.queues[q], &mem, head, 0);
                    continue;
                }
            };
            let room = writer.available_bytes();
            if room < super::packet::HDR_LEN {
                DeviceMetrics::inc(&self.metrics.errors);
                used_any |= add_used(&mut self.state.queues[q], &mem, head, 0);
                continue;
            }
            let Some((hdr, len)) = self.backend.recv_pkt(&mut self.buf, room) else {
                // Nothing after all (sockets had no data, or the buffer is too small for
                // any payload): give the buffer back and wait for the next event.
                self.state.queues[q].go_to_previous_position();
                break;
            };
            let written = write_header(&mut writer, &hdr).and_then(|()| {
                writer
                    .write_all(&self.buf[..len])
                    .map_err(super::packet::PacketError::Memory)
            });
            if let Err(e) = written {
                DeviceMetrics::inc(&self.metrics.errors);
                log::debug!("vsock: cannot write RX packet: {e}");
            }
            DeviceMetrics::add(&self.metrics.read_bytes, len as u64);
            used_any |= add_used(
                &mut self.state.queues[q],
                &mem,
                head,
                writer.bytes_written() as u32,
            );
        }
        if used_any {
            let irq = self.state.irq.clone();
            notify_guest(&mut self.state.queues[q], &mem, &irq);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn state(&self) -> &DeviceState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("vsock: ignoring config write at {offset:#x}");
    }

    fn process_queue(&mut self, index: usize) {
        match index {
            TXQ => {
                self.process_tx();
                // TX packets often owe the guest an answer (RESPONSE, RST, credit update).
                self.process_rx();
            }
            RXQ => self.process_rx(),
            _ => {}
        }
    }

    fn on_reset(&mut self) {
        self.backend.reset();
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
