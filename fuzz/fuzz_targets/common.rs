//! Shared by the fuzz targets: guest memory filled with the fuzzer's bytes and a split queue
//! laid out in it, so descriptors, rings and buffers are all attacker-controlled.
#![allow(dead_code)] // each target uses a different part of this module

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 0x1_0000;
pub const QUEUE_SIZE: u16 = 16;
pub const DESC_TABLE: u64 = 0x0;
pub const AVAIL_RING: u64 = 0x100;
pub const USED_RING: u64 = 0x200;

/// 64 KiB of guest memory whose start holds `data`.
pub fn guest_memory(data: &[u8]) -> GuestMemoryMmap<()> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = data.len().min(MEM_SIZE);
    mem.write_slice(&data[..n], GuestAddress(0)).unwrap();
    mem
}

/// A ready queue over the fixed layout; its avail index and entries come from the data.
pub fn queue(size: u16) -> Queue {
    queue_at(size, 0)
}

/// The same layout shifted by `base`, for devices with several queues.
pub fn queue_at(size: u16, base: u64) -> Queue {
    let mut q = Queue::new(size).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some((base + DESC_TABLE) as u32), Some(0));
    q.set_avail_ring_address(Some((base + AVAIL_RING) as u32), Some(0));
    q.set_used_ring_address(Some((base + USED_RING) as u32), Some(0));
    q.set_ready(true);
    q
}
