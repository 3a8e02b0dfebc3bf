//! The virtio-mmio register interface driven by arbitrary sequences of reads and writes
//! (any offset, any width), with a virtio-blk device behind it and guest memory holding the
//! rest of the input, so a notify may process fuzzer-built queues.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use ward_vmm::devices::bus::BusDevice;
use ward_vmm::devices::virtio::block::{Block, BlockConfig};
use ward_vmm::devices::virtio::transport::MmioTransport;

#[path = "common.rs"]
mod common;

/// One access: 1 byte kind, 2 bytes offset, 4 bytes value.
const OP_LEN: usize = 7;

fuzz_target!(|data: &[u8]| {
    let (ops, memory) = data.split_at(data.len().min(OP_LEN * 64));
    let mem = common::guest_memory(memory);
    let blk = Block::new(BlockConfig {
        drive_id: "fuzz".into(),
        ..BlockConfig::default()
    })
    .unwrap();
    let mut t = MmioTransport::new(Arc::new(Mutex::new(blk)), mem);
    for op in ops.chunks_exact(OP_LEN) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]])) % 0x1100;
        let value = [op[3], op[4], op[5], op[6], 0, 0, 0, 0];
        let width = [1usize, 2, 4, 8][usize::from(op[0] >> 1) & 3];
        if op[0] & 1 == 0 {
            let mut buf = [0u8; 8];
            t.read(offset, &mut buf[..width]);
        } else {
            t.write(offset, &value[..width]);
        }
    }
});
