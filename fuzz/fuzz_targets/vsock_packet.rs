//! virtio-vsock TX packet parsing, and the backend's connection state machine fed with the
//! parsed packets (guest-initiated connections find no listener and get RST).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use ward_vmm::devices::virtio::vsock::VsockUnixBackend;
use ward_vmm::devices::virtio::vsock::packet::{PacketHeader, parse_tx};

const GUEST_CID: u64 = 3;

thread_local! {
    static BACKEND: RefCell<VsockUnixBackend> = RefCell::new({
        let p = std::env::temp_dir().join(format!("ward-fuzz-vsock-{}.sock", std::process::id()));
        VsockUnixBackend::new(&p, GUEST_CID).unwrap()
    });
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut buf = vec![0u8; 4096];
    BACKEND.with(|b| {
        let mut backend = b.borrow_mut();
        // Several packets per input, so sequences of ops reach the state machine.
        while !rest.is_empty() {
            let available = rest.len();
            let Ok(mut pkt) = parse_tx(&mut rest, available) else {
                break;
            };
            pkt.hdr.src_cid = GUEST_CID;
            pkt.hdr.dst_cid = 2;
            let hdr_bytes = pkt.hdr.to_bytes();
            assert_eq!(PacketHeader::from_bytes(&hdr_bytes), pkt.hdr);
            backend.send_pkt(&pkt);
            while backend.has_rx() {
                if backend.recv_pkt(&mut buf, 44 + 4096).is_none() {
                    break;
                }
            }
        }
        backend.reset();
    });
});
