//! Drives an [`Rng`] from the VMM's event loop on its queue's ioeventfd.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Rng;
use crate::devices::virtio::VirtioDevice;

impl MutEventSubscriber for Rng {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.state().queue_evts[0],
            0,
            EventSet::IN,
        )) {
            log::error!("rng: cannot watch the queue eventfd: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() == 0 {
            let _ = self.state().queue_evts[0].read();
            self.process_queue(0);
        }
    }
}
