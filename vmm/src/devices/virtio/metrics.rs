//! Per-device counters, exported by `GET /metrics`. Updated with relaxed atomics from
//! whichever thread processes the queue; read as a serializable snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of one device. "read" is data going to the guest, "write" data coming from
/// it: for virtio-blk disk reads and writes, for vsock host→guest and guest→host payload, for
/// virtio-rng the random bytes handed out.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    /// Descriptor chains taken from the guest (block requests, vsock TX packets, rng buffers).
    pub requests: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Requests that failed or were dropped as malformed.
    pub errors: AtomicU64,
    /// The device had something for the guest but no buffer to put it in.
    pub queue_full: AtomicU64,
}

/// A point-in-time copy of [`DeviceMetrics`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceMetricsSnapshot {
    pub requests: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub errors: u64,
    pub queue_full: u64,
}

impl DeviceMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DeviceMetricsSnapshot {
        DeviceMetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
        }
    }
}
