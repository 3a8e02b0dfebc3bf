//! virtio-blk request parsing and execution on guest-controlled descriptors and buffers.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_vmm::devices::virtio::VirtioDevice;
use ward_vmm::devices::virtio::block::{Block, BlockConfig};

#[path = "common.rs"]
mod common;

/// A 32 KiB disk image shared by every iteration (writes stay inside it).
fn image() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("ward-fuzz-blk-{}.img", std::process::id()));
        std::fs::write(&p, vec![0xa5u8; 32 * 1024]).unwrap();
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mem = common::guest_memory(data);
    let mut blk = Block::new(BlockConfig {
        drive_id: "fuzz".into(),
        path: (flags & 1 == 0).then(|| image().clone()),
        read_only: flags & 2 != 0,
        serial: Some("fuzz".into()),
        direct_io: flags & 8 != 0,
    })
    .unwrap();
    let state = blk.state_mut();
    state.acked_features = state.avail_features;
    if flags & 4 == 0 {
        state.acked_features &= !ward_vmm::devices::virtio::features::VIRTIO_RING_F_EVENT_IDX;
    }
    state.queues[0] = common::queue(common::QUEUE_SIZE);
    if blk.activate(mem).is_ok() {
        blk.process_queue(0);
    }
});
