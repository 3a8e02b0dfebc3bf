//! ward's boot-time port (PIO 0x3f0, as Firecracker's): the guest writes
//! [`GUEST_READY`] once its init is up, and the VMM records the time since its own process
//! started. The first write counts; later ones are ignored.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::devices::bus::BusDevice;
use crate::metrics::{Metrics, since_start_us};

/// The value a guest writes to mark "guest ready".
pub const GUEST_READY: u8 = 123;

#[derive(Debug)]
pub struct BootPort {
    metrics: Arc<Metrics>,
    quiet: bool,
}

impl BootPort {
    /// `quiet` suppresses the line the VMM logs on stderr at guest ready.
    pub fn new(metrics: Arc<Metrics>, quiet: bool) -> Self {
        Self { metrics, quiet }
    }
}

impl BusDevice for BootPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() != Some(&GUEST_READY) {
            return;
        }
        let now = since_start_us().max(1);
        let first = self
            .metrics
            .guest_ready_us
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if first && !self.quiet {
            eprintln!(
                "ward-vmm: guest ready {}.{:03} ms after start",
                now / 1000,
                now % 1000
            );
        }
    }
}
