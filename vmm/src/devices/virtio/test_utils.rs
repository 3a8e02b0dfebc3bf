//! Helpers for device unit tests: a small guest memory and a driver-side split queue built on
//! virtio-queue's mock, with explicit control over every descriptor (so tests can build the
//! malformed chains a hostile guest would).

use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{GuestMemory, VirtioDevice, features};

pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;

/// Guest memory size used by the tests.
pub const MEM_SIZE: u64 = 0x100_0000;

pub fn guest_mem() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// One descriptor of a test chain: guest address, length, device-writable.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

pub fn r(addr: u64, len: u32) -> Desc {
    Desc {
        addr,
        len,
        write: false,
    }
}

pub fn w(addr: u64, len: u32) -> Desc {
    Desc {
        addr,
        len,
        write: true,
    }
}

/// The driver side of one split queue.
///
/// The used ring is placed here rather than where `MockSplitQueue` puts it: the mock computes
/// the end of the avail ring in elements instead of bytes, so its used ring overlaps the upper
/// half of the avail ring once more than half the entries have been offered.
pub struct TestQueue<'a> {
    pub mock: MockSplitQueue<'a, GuestMemory>,
    mem: &'a GuestMemory,
    used_addr: u64,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl<'a> TestQueue<'a> {
    pub fn new(mem: &'a GuestMemory, base: u64, size: u16) -> Self {
        let mock = MockSplitQueue::create(mem, GuestAddress(base), size);
        // Avail ring: flags, idx, ring, used_event.
        let avail_end = mock.avail_addr().0 + 6 + 2 * u64::from(size);
        let used_addr = (avail_end + 3) & !3;
        Self {
            mock,
            mem,
            used_addr,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    pub fn queue(&self) -> Queue {
        let mut q = self.mock.create_queue::<Queue>().unwrap();
        q.set_used_ring_address(
            Some(self.used_addr as u32),
            Some((self.used_addr >> 32) as u32),
        );
        q
    }

    /// Writes a raw descriptor at `index`.
    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        self.mock.desc_table().store(index, d).unwrap();
    }

    /// Makes `head` available to the device.
    pub fn push_avail(&mut self, head: u16) {
        let slot = self.avail_idx % self.size;
        self.mock
            .avail()
            .ring()
            .ref_at(slot as usize)
            .unwrap()
            .store(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mock.avail().idx().store(self.avail_idx);
    }

    /// Writes a well-linked chain and makes it available; returns its head index.
    pub fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == descs.len();
            let mut flags = if d.write { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            self.set_desc(index, d.addr, d.len, flags, (index + 1) % self.size);
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.push_avail(head);
        head
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used_addr + 2)).unwrap()
    }

    /// (descriptor id, bytes written) of used element `i`.
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = self.used_addr + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// Negotiates every offered feature, installs `queues` and activates `dev`, as a driver would.
pub fn activate(dev: &mut dyn VirtioDevice, mem: &GuestMemory, queues: Vec<Queue>) {
    let state = dev.state_mut();
    state.acked_features = state.avail_features & !features::VIRTIO_RING_F_EVENT_IDX;
    for (i, q) in queues.into_iter().enumerate() {
        state.queues[i] = q;
    }
    dev.activate(mem.clone()).unwrap();
}

/// Drains the interrupt EventFd; true if an interrupt was raised.
pub fn take_irq(dev: &dyn VirtioDevice) -> bool {
    dev.state().irq.eventfd().read().is_ok()
}
