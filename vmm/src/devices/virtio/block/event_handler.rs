//! Drives a [`Block`] from the VMM's event loop: the queue's ioeventfd fires when the guest
//! writes QueueNotify, and the queue is drained here rather than on the vCPU thread.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;
use crate::devices::virtio::VirtioDevice;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.state().queue_evts[0],
            0,
            EventSet::IN,
        )) {
            log::error!(
                "drive {}: cannot watch the queue eventfd: {e}",
                self.drive_id()
            );
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() != 0 || !events.event_set().contains(EventSet::IN) {
            return;
        }
        // Drain the counter first so a notification arriving while we process re-arms it.
        let _ = self.state().queue_evts[0].read();
        self.process_queue(0);
    }
}
