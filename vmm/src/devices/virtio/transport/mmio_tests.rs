//! The virtio-mmio register interface driven the way Linux's virtio_mmio driver does it, plus
//! the out-of-order and malformed accesses a hostile guest can make.

use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::virtio::block::request::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_GET_ID};
use crate::devices::virtio::block::{Block, BlockConfig};
use crate::devices::virtio::test_utils::*;
use crate::devices::virtio::{device_type, interrupt};

fn transport(mem: &GuestMemory) -> (MmioTransport, Arc<Mutex<Block>>) {
    let dev = Arc::new(Mutex::new(
        Block::new(BlockConfig {
            drive_id: "d0".into(),
            path: None,
            read_only: true,
            serial: Some("serial-0".into()),
            direct_io: false,
        })
        .unwrap(),
    ));
    (MmioTransport::new(dev.clone(), mem.clone()), dev)
}

fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// Linux's probe + virtio_dev_probe sequence, with one queue set up from `q`.
fn bring_up(t: &mut MmioTransport, q: &TestQueue<'_>) {
    bring_up_queues(t, &[q]);
}

fn bring_up_queues(t: &mut MmioTransport, queues: &[&TestQueue<'_>]) {
    wr(t, reg::STATUS, 0);
    wr(t, reg::STATUS, status::ACKNOWLEDGE);
    wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(t, reg::DEVICE_FEATURES_SEL, 0);
    let lo = rd(t, reg::DEVICE_FEATURES);
    wr(t, reg::DEVICE_FEATURES_SEL, 1);
    let hi = rd(t, reg::DEVICE_FEATURES);
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, lo);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, hi);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    wr(t, reg::STATUS, s);
    assert_eq!(rd(t, reg::STATUS), s);
    for (i, q) in queues.iter().enumerate() {
        wr(t, reg::QUEUE_SEL, i as u32);
        assert_eq!(rd(t, reg::QUEUE_READY), 0);
        assert!(rd(t, reg::QUEUE_NUM_MAX) >= 16);
        wr(t, reg::QUEUE_NUM, 16);
        let qq = q.queue();
        wr(t, reg::QUEUE_DESC_LOW, qq.desc_table() as u32);
        wr(t, reg::QUEUE_DESC_HIGH, (qq.desc_table() >> 32) as u32);
        wr(t, reg::QUEUE_DRIVER_LOW, qq.avail_ring() as u32);
        wr(t, reg::QUEUE_DRIVER_HIGH, (qq.avail_ring() >> 32) as u32);
        wr(t, reg::QUEUE_DEVICE_LOW, qq.used_ring() as u32);
        wr(t, reg::QUEUE_DEVICE_HIGH, (qq.used_ring() >> 32) as u32);
        wr(t, reg::QUEUE_READY, 1);
        assert_eq!(rd(t, reg::QUEUE_READY), 1);
    }
    wr(t, reg::STATUS, s | status::DRIVER_OK);
}

#[test]
fn identification_registers() {
    let mem = guest_mem();
    let (mut t, _) = transport(&mem);
    assert_eq!(rd(&mut t, reg::MAGIC), 0x7472_6976);
    assert_eq!(rd(&mut t, reg::VERSION), 2);
    assert_eq!(rd(&mut t, reg::DEVICE_ID), device_type::BLOCK);
    wr(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut t, reg::DEVICE_FEATURES) & 1, 1, "VERSION_1 offered");
    wr(&mut t, reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 0);
    assert_eq!(rd(&mut t, reg::SHM_LEN_LOW), u32::MAX);
}

#[test]
fn full_bring_up_and_direct_queue_notify() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    let mut q = TestQueue::new(&mem, 0, 16);
    bring_up(&mut t, &q);
    assert_eq!(t.device_status() & status::DRIVER_OK, status::DRIVER_OK);
    assert!(dev.lock().unwrap().state().is_activated());

    let mut h = VIRTIO_BLK_T_GET_ID.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 12]);
    q.write(0x10_0000, &h);
    q.add_chain(&[r(0x10_0000, 16), w(0x20_0000, 20), w(0x30_0000, 1)]);
    // No ioeventfd: the write reaches the transport, which processes the queue itself.
    wr(&mut t, NOTIFY_REG_OFFSET, 0);
    assert_eq!(q.used_idx(), 1);
    assert_eq!(q.read(0x30_0000, 1)[0], VIRTIO_BLK_S_OK);
    assert_eq!(&q.read(0x20_0000, 8), b"serial-0");
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), interrupt::USED_BUFFER);
    assert!(t.irq_evt().unwrap().read().is_ok());
    wr(&mut t, reg::INTERRUPT_ACK, interrupt::USED_BUFFER);
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), 0);

    // Notifying a queue that does not exist is ignored.
    wr(&mut t, NOTIFY_REG_OFFSET, 5);
}

#[test]
fn config_space_and_config_change() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    let q = TestQueue::new(&mem, 0, 16);
    bring_up(&mut t, &q);
    let generation = rd(&mut t, reg::CONFIG_GENERATION);
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(4096).unwrap();
    dev.lock()
        .unwrap()
        .swap_backend(Some(img.path()), None)
        .unwrap();
    assert_ne!(rd(&mut t, reg::CONFIG_GENERATION), generation);
    assert_eq!(
        rd(&mut t, reg::INTERRUPT_STATUS) & interrupt::CONFIG_CHANGE,
        interrupt::CONFIG_CHANGE
    );
    let mut cap = [0u8; 8];
    t.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
    // Byte access inside config space, and past its end, are fine.
    let mut b = [0u8; 1];
    t.read(0x100, &mut b);
    assert_eq!(b[0], 8);
    t.read(0xff0, &mut b);
    assert_eq!(b[0], 0);
    t.read(0x5000, &mut b);
    t.write(0x100, &[1, 2, 3]);
}

#[test]
fn reset_returns_to_initial_state() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    let q = TestQueue::new(&mem, 0, 16);
    bring_up(&mut t, &q);
    wr(&mut t, reg::STATUS, 0);
    assert_eq!(rd(&mut t, reg::STATUS), 0);
    let d = dev.lock().unwrap();
    assert!(!d.state().is_activated());
    assert_eq!(d.state().acked_features, 0);
    assert!(!d.state().queues[0].ready());
    drop(d);
    // And it comes up again.
    bring_up(&mut t, &q);
    assert!(dev.lock().unwrap().state().is_activated());
}

#[test]
fn legacy_driver_is_refused_features_ok() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    wr(&mut t, reg::DRIVER_FEATURES, u32::MAX);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    wr(&mut t, reg::STATUS, s);
    assert_eq!(rd(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    wr(&mut t, reg::STATUS, s | status::DRIVER_OK);
    assert_eq!(rd(&mut t, reg::STATUS) & status::DRIVER_OK, 0);
    assert!(!dev.lock().unwrap().state().is_activated());
}

#[test]
fn driver_cannot_ack_features_the_device_does_not_offer() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    wr(&mut t, reg::DRIVER_FEATURES, u32::MAX);
    let d = dev.lock().unwrap();
    assert_eq!(
        d.state().acked_features,
        d.state().avail_features & !0xffff_ffff
    );
}

#[test]
fn queue_setup_outside_features_ok_and_bad_queues() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    // Before FEATURES_OK: ignored.
    wr(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(rd(&mut t, reg::QUEUE_READY), 0);
    // A selected queue that does not exist reads as absent.
    wr(&mut t, reg::QUEUE_SEL, 9);
    assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
    wr(&mut t, reg::QUEUE_SEL, 0);

    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    wr(&mut t, reg::DRIVER_FEATURES, 1);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    wr(&mut t, reg::STATUS, s);
    wr(&mut t, reg::QUEUE_SEL, 9);
    wr(&mut t, reg::QUEUE_NUM, 16);
    wr(&mut t, reg::QUEUE_SEL, 0);
    // Size not a power of two, rings outside guest memory.
    wr(&mut t, reg::QUEUE_NUM, 13);
    wr(&mut t, reg::QUEUE_DESC_LOW, 0xffff_f000);
    wr(&mut t, reg::QUEUE_DESC_HIGH, 0xffff_ffff);
    wr(&mut t, reg::QUEUE_READY, 1);
    wr(&mut t, reg::STATUS, s | status::DRIVER_OK);
    let st = rd(&mut t, reg::STATUS);
    assert_eq!(st & status::DRIVER_OK, 0);
    assert_eq!(st & status::DEVICE_NEEDS_RESET, status::DEVICE_NEEDS_RESET);
    assert!(!dev.lock().unwrap().state().is_activated());
    // Notifications to an inactive device are ignored.
    wr(&mut t, NOTIFY_REG_OFFSET, 0);
}

#[test]
fn odd_sized_and_unaligned_register_accesses_are_ignored() {
    let mem = guest_mem();
    let (mut t, _) = transport(&mem);
    let mut b2 = [0xffu8; 2];
    t.read(reg::MAGIC, &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b4 = [0u8; 4];
    t.read(0x2, &mut b4);
    assert_eq!(b4, [0; 4]);
    t.write(reg::STATUS, &[1]);
    t.write(0x71, &1u32.to_le_bytes());
    assert_eq!(t.device_status(), 0);
    // Status that clears bits is refused.
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    assert_eq!(t.device_status(), status::ACKNOWLEDGE | status::DRIVER);
    // Unknown and read-only registers.
    wr(&mut t, reg::MAGIC, 0);
    wr(&mut t, 0x0f8, 0);
    assert_eq!(rd(&mut t, 0x0f8), 0);
}

#[test]
fn eventfds_for_the_vmm() {
    let mem = guest_mem();
    let (t, dev) = transport(&mem);
    let evts = t.queue_evts().unwrap();
    assert_eq!(evts.len(), 1);
    assert_eq!(evts[0].1, 0);
    evts[0].0.write(1).unwrap();
    assert_eq!(dev.lock().unwrap().state().queue_evts[0].read().unwrap(), 1);
    t.irq_evt().unwrap().write(1).unwrap();
    assert!(dev.lock().unwrap().state().irq.eventfd().read().is_ok());
}

#[test]
fn queue_can_be_disabled_after_driver_ok_but_not_reconfigured() {
    let mem = guest_mem();
    let (mut t, dev) = transport(&mem);
    let q = TestQueue::new(&mem, 0, 16);
    bring_up(&mut t, &q);
    let desc = dev.lock().unwrap().state().queues[0].desc_table();
    wr(&mut t, reg::QUEUE_DESC_LOW, 0x1234_0000);
    assert_eq!(dev.lock().unwrap().state().queues[0].desc_table(), desc);
    wr(&mut t, reg::QUEUE_READY, 0);
    assert_eq!(rd(&mut t, reg::QUEUE_READY), 0);
    // A notification for the disabled queue is harmless.
    wr(&mut t, NOTIFY_REG_OFFSET, 0);
}

#[test]
fn vsock_with_three_queues_behind_the_transport() {
    use crate::devices::virtio::vsock::packet::{HDR_LEN, OP_REQUEST, PacketHeader};
    use crate::devices::virtio::vsock::{Vsock, VsockUnixBackend};
    use std::io::Write;

    let mem = guest_mem();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let dev = Arc::new(Mutex::new(
        Vsock::new(3, VsockUnixBackend::new(&uds, 3).unwrap()).unwrap(),
    ));
    let mut t = MmioTransport::new(dev.clone(), mem.clone());
    assert_eq!(rd(&mut t, reg::DEVICE_ID), device_type::VSOCK);
    assert_eq!(t.queue_evts().unwrap().len(), 3);
    let mut rxq = TestQueue::new(&mem, 0, 16);
    let txq = TestQueue::new(&mem, 0x1_0000, 16);
    let evq = TestQueue::new(&mem, 0x2_0000, 16);
    bring_up_queues(&mut t, &[&rxq, &txq, &evq]);
    assert!(dev.lock().unwrap().state().is_activated());
    let mut cid = [0u8; 8];
    t.read(0x100, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 3);

    let mut host = std::os::unix::net::UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    dev.lock().unwrap().process_backend_events();
    // No RX buffer yet; the driver adds one and notifies the RX queue.
    rxq.add_chain(&[w(0x10_0000, 4096)]);
    wr(&mut t, NOTIFY_REG_OFFSET, 0);
    assert_eq!(rxq.used_idx(), 1);
    let h = PacketHeader::from_bytes(rxq.read(0x10_0000, HDR_LEN)[..].try_into().unwrap());
    assert_eq!((h.op, h.dst_port, h.dst_cid), (OP_REQUEST, 1024, 3));
}
