//! The virtio-rng device: one queue of device-writable buffers, each filled from the host's
//! getrandom(2). A buffer gets at most [`MAX_BYTES_PER_REQUEST`]: the guest asks again if it
//! wants more, and a huge chain cannot keep the VMM thread busy.

use std::io::Write;
use std::sync::Arc;

use virtio_queue::QueueT;

use crate::devices::virtio::metrics::DeviceMetrics;
use crate::devices::virtio::queue::{add_used, notify_guest};
use crate::devices::virtio::{DeviceState, VirtioDevice, VirtioError, device_type, features};

pub const QUEUE_SIZE: u16 = 256;
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// A virtio-rng device.
#[derive(Debug)]
pub struct Rng {
    state: DeviceState,
    metrics: Arc<DeviceMetrics>,
    buf: Vec<u8>,
}

impl Rng {
    pub fn new() -> Result<Self, VirtioError> {
        Ok(Self {
            state: DeviceState::new(features::VIRTIO_RING_F_INDIRECT_DESC, &[QUEUE_SIZE])?,
            metrics: Arc::new(DeviceMetrics::default()),
            buf: vec![0; MAX_BYTES_PER_REQUEST],
        })
    }

    pub fn metrics(&self) -> Arc<DeviceMetrics> {
        self.metrics.clone()
    }
}

/// Fills `buf` from the kernel's entropy pool (blocking only before it is initialised).
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += n as usize;
        }
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn state(&self) -> &DeviceState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn process_queue(&mut self, index: usize) {
        if index != 0 {
            return;
        }
        let Some(mem) = self.state.mem.clone() else {
            return;
        };
        if !self.state.queues[0].ready() {
            return;
        }
        let mut used_any = false;
        while let Some(chain) = self.state.queues[0].pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            DeviceMetrics::inc(&self.metrics.requests);
            let written = match chain.writer(&mem) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(self.buf.len());
                    let buf = &mut self.buf[..n];
                    match getrandom(buf).and_then(|()| w.write_all(buf)) {
                        Ok(()) => n,
                        Err(e) => {
                            log::warn!("rng: cannot fill a guest buffer: {e}");
                            DeviceMetrics::inc(&self.metrics.errors);
                            w.bytes_written()
                        }
                    }
                }
                Err(e) => {
                    log::debug!("rng: unusable chain: {e}");
                    DeviceMetrics::inc(&self.metrics.errors);
                    0
                }
            };
            DeviceMetrics::add(&self.metrics.read_bytes, written as u64);
            used_any |= add_used(&mut self.state.queues[0], &mem, head, written as u32);
        }
        if used_any {
            let irq = self.state.irq.clone();
            notify_guest(&mut self.state.queues[0], &mem, &irq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::*;

    #[test]
    fn fills_guest_buffers_with_random_bytes() {
        let mem = guest_mem();
        let mut q = TestQueue::new(&mem, 0, 16);
        let mut dev = Rng::new().unwrap();
        activate(&mut dev, &mem, vec![q.queue()]);
        q.add_chain(&[w(0x10_0000, 64), w(0x20_0000, 64)]);
        dev.process_queue(0);
        assert_eq!(q.used(0), (0, 128));
        let a = q.read(0x10_0000, 64);
        let b = q.read(0x20_0000, 64);
        assert_ne!(a, vec![0; 64]);
        assert_ne!(a, b);
        assert!(take_irq(&dev));
        assert_eq!(dev.metrics().snapshot().read_bytes, 128);
    }

    #[test]
    fn large_read_only_and_invalid_chains() {
        let mem = guest_mem();
        let mut q = TestQueue::new(&mem, 0, 16);
        let mut dev = Rng::new().unwrap();
        activate(&mut dev, &mem, vec![q.queue()]);
        // More than the per-request cap.
        q.add_chain(&[w(0x10_0000, 1 << 20)]);
        // Read-only buffer: nothing to fill.
        q.add_chain(&[r(0x10_0000, 64)]);
        // Outside guest memory.
        q.add_chain(&[w(MEM_SIZE - 8, 64)]);
        dev.process_queue(0);
        assert_eq!(q.used_idx(), 3);
        assert_eq!(q.used(0).1, MAX_BYTES_PER_REQUEST as u32);
        assert_eq!(q.used(1).1, 0);
        assert_eq!(q.used(2).1, 0);
        assert_eq!(dev.metrics().snapshot().errors, 1);
    }
}
