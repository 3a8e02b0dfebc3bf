//! The whole virtio-vsock device on guest-controlled TX and RX queues: descriptor chains,
//! packets and RX buffers all come from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_vmm::devices::virtio::VirtioDevice;
use ward_vmm::devices::virtio::vsock::device::{RXQ, TXQ};
use ward_vmm::devices::virtio::vsock::{Vsock, VsockUnixBackend};

#[path = "common.rs"]
mod common;

const GUEST_CID: u64 = 3;

fuzz_target!(|data: &[u8]| {
    let mem = common::guest_memory(data);
    let uds = std::env::temp_dir().join(format!("ward-fuzz-vsockdev-{}.sock", std::process::id()));
    let backend = VsockUnixBackend::new(&uds, GUEST_CID).unwrap();
    let mut dev = Vsock::new(GUEST_CID, backend).unwrap();
    let state = dev.state_mut();
    state.acked_features = state.avail_features;
    for (i, q) in state.queues.iter_mut().enumerate() {
        *q = common::queue_at(common::QUEUE_SIZE, 0x400 * i as u64);
    }
    if dev.activate(mem).is_ok() {
        dev.process_queue(TXQ);
        dev.process_queue(RXQ);
        dev.process_backend_events();
    }
});
