//! Drives a [`Vsock`] from the VMM's event loop: the three queue ioeventfds and the backend's
//! epoll fd (any host socket ready).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Vsock;
use super::device::{EVQ, RXQ, TXQ};
use crate::devices::virtio::VirtioDevice;

const BACKEND: u32 = 3;

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for q in [RXQ, TXQ, EVQ] {
            if let Err(e) = ops.add(Events::with_data(
                &self.state().queue_evts[q],
                q as u32,
                EventSet::IN,
            )) {
                log::error!("vsock: cannot watch queue {q}: {e}");
            }
        }
        if let Err(e) = ops.add(Events::with_data_raw(
            self.backend().as_raw_fd(),
            BACKEND,
            EventSet::IN,
        )) {
            log::error!("vsock: cannot watch the backend: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            BACKEND => self.process_backend_events(),
            q if (q as usize) < self.state().queue_evts.len() => {
                let _ = self.state().queue_evts[q as usize].read();
                self.process_queue(q as usize);
            }
            _ => {}
        }
    }
}
