//! Queue helpers shared by the devices: returning used buffers and deciding when the guest
//! must be interrupted (honouring VIRTIO_RING_F_EVENT_IDX).

use virtio_queue::{Queue, QueueT};

use super::{GuestMemory, IrqTrigger, interrupt};

/// Puts `head` on the used ring with `len` bytes written. A failure means the driver broke the
/// ring (its memory vanished or it is inconsistent); the chain is dropped and the error logged.
pub fn add_used(queue: &mut Queue, mem: &GuestMemory, head: u16, len: u32) -> bool {
    match queue.add_used(mem, head, len) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("virtio: cannot return descriptor {head} to the used ring: {e}");
            false
        }
    }
}

/// Raises the used-buffer interrupt if the driver asked for one.
pub fn notify_guest(queue: &mut Queue, mem: &GuestMemory, irq: &IrqTrigger) {
    // On error, interrupt anyway: a spurious interrupt is harmless, a lost one hangs the guest.
    if queue.needs_notification(mem).unwrap_or(true) {
        irq.trigger(interrupt::USED_BUFFER);
    }
}
