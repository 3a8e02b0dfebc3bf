//! virtio-blk against mock guest memory: every request type, and the malformed chains a
//! hostile guest can build.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::virtio::block::request::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use crate::devices::virtio::interrupt;
use crate::devices::virtio::test_utils::*;

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn image(sectors: u64) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8).collect();
    f.write_all(&data).unwrap();
    f
}

fn block(path: Option<&Path>, read_only: bool) -> Block {
    Block::new(BlockConfig {
        drive_id: "rootfs".into(),
        path: path.map(Path::to_path_buf),
        read_only,
        serial: Some("layer-0".into()),
        direct_io: false,
    })
    .unwrap()
}

struct Rig<'a> {
    q: TestQueue<'a>,
    dev: Block,
}

impl<'a> Rig<'a> {
    fn new(mem: &'a GuestMemory, dev: Block) -> Self {
        let q = TestQueue::new(mem, 0, 16);
        let mut dev = dev;
        activate(&mut dev, mem, vec![q.queue()]);
        Self { q, dev }
    }

    fn header(&self, t: u32, sector: u64) {
        let mut h = t.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&sector.to_le_bytes());
        self.q.write(HDR, &h);
        self.q.write(STATUS, &[0xff]);
    }

    /// Runs the queue and returns (used len, status byte) of the newest used element.
    fn run(&mut self) -> (u32, u8) {
        let before = self.q.used_idx();
        self.dev.process_queue(0);
        assert_eq!(
            self.q.used_idx(),
            before.wrapping_add(1),
            "one request completed"
        );
        let (_, len) = self.q.used(before);
        (len, self.q.read(STATUS, 1)[0])
    }

    fn read_req(&mut self, sector: u64, len: u32) -> (u32, u8) {
        self.header(VIRTIO_BLK_T_IN, sector);
        self.q.add_chain(&[r(HDR, 16), w(DATA, len), w(STATUS, 1)]);
        self.run()
    }

    fn write_req(&mut self, sector: u64, data: &[u8]) -> (u32, u8) {
        self.header(VIRTIO_BLK_T_OUT, sector);
        self.q.write(DATA, data);
        self.q
            .add_chain(&[r(HDR, 16), r(DATA, data.len() as u32), w(STATUS, 1)]);
        self.run()
    }
}

#[test]
fn read_returns_image_data() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), true));
    assert_eq!(rig.read_req(2, 1024), (1025, VIRTIO_BLK_S_OK));
    let data = rig.q.read(DATA, 1024);
    assert!(data[..512].iter().all(|&b| b == 2));
    assert!(data[512..].iter().all(|&b| b == 3));
    assert!(take_irq(&rig.dev));
    assert_eq!(rig.dev.metrics().snapshot().read_bytes, 1024);
}

#[test]
fn read_split_over_many_descriptors_and_larger_than_a_chunk() {
    let img = image(600);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), true));
    rig.header(VIRTIO_BLK_T_IN, 0);
    // 300 KiB over three descriptors: crosses the 128 KiB bounce buffer.
    rig.q.add_chain(&[
        r(HDR, 16),
        w(DATA, 100 * 1024),
        w(DATA + 100 * 1024, 100 * 1024),
        w(DATA + 200 * 1024, 100 * 1024),
        w(STATUS, 1),
    ]);
    assert_eq!(rig.run(), (300 * 1024 + 1, VIRTIO_BLK_S_OK));
    let data = rig.q.read(DATA, 300 * 1024);
    assert_eq!(data[299 * 1024], (299 * 1024 / 512) as u8);
}

#[test]
fn write_reaches_the_file_and_flush_succeeds() {
    let mut img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    assert_eq!(rig.write_req(1, &[0xab; 512]), (1, VIRTIO_BLK_S_OK));
    rig.header(VIRTIO_BLK_T_FLUSH, 0);
    rig.q.add_chain(&[r(HDR, 16), w(STATUS, 1)]);
    assert_eq!(rig.run(), (1, VIRTIO_BLK_S_OK));
    let mut buf = vec![0; 1024];
    img.as_file_mut().seek(SeekFrom::Start(512)).unwrap();
    img.as_file_mut().read_exact(&mut buf).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0xab));
    assert!(buf[512..].iter().all(|&b| b == 2));
}

#[test]
fn read_only_drive_rejects_writes_and_offers_ro() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), true));
    assert_ne!(
        rig.dev.state().avail_features & blk_features::VIRTIO_BLK_F_RO,
        0
    );
    assert_eq!(rig.write_req(1, &[0xab; 512]), (1, VIRTIO_BLK_S_IOERR));
    rig.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    rig.q.add_chain(&[r(HDR, 16), w(STATUS, 1)]);
    assert_eq!(rig.run(), (1, VIRTIO_BLK_S_IOERR));
    assert_eq!(std::fs::read(img.path()).unwrap()[512], 1);
    assert_eq!(rig.dev.metrics().snapshot().errors, 2);
}

#[test]
fn get_id_returns_the_serial() {
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(None, true));
    rig.header(VIRTIO_BLK_T_GET_ID, 0);
    rig.q.add_chain(&[r(HDR, 16), w(DATA, 20), w(STATUS, 1)]);
    assert_eq!(rig.run(), (21, VIRTIO_BLK_S_OK));
    assert_eq!(&rig.q.read(DATA, 20)[..8], b"layer-0\0");
}

#[test]
fn out_of_range_and_unaligned_requests_fail() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    assert_eq!(rig.read_req(7, 1024).1, VIRTIO_BLK_S_IOERR);
    assert_eq!(rig.read_req(u64::MAX, 512).1, VIRTIO_BLK_S_IOERR);
    assert_eq!(rig.read_req(0, 100).1, VIRTIO_BLK_S_IOERR);
    assert_eq!(rig.write_req(8, &[1; 512]).1, VIRTIO_BLK_S_IOERR);
    assert_eq!(std::fs::metadata(img.path()).unwrap().len(), 8 * 512);
}

#[test]
fn unknown_request_type_is_unsupported() {
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(None, false));
    rig.header(77, 0);
    rig.q.add_chain(&[r(HDR, 16), w(STATUS, 1)]);
    assert_eq!(rig.run(), (1, VIRTIO_BLK_S_UNSUPP));
}

#[test]
fn empty_slot_fails_io_but_answers_flush() {
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(None, false));
    assert_eq!(rig.dev.capacity(), 0);
    assert_eq!(rig.read_req(0, 512).1, VIRTIO_BLK_S_IOERR);
    rig.header(VIRTIO_BLK_T_FLUSH, 0);
    rig.q.add_chain(&[r(HDR, 16), w(STATUS, 1)]);
    assert_eq!(rig.run().1, VIRTIO_BLK_S_OK);
}

#[test]
fn swap_attaches_an_image_and_raises_config_change() {
    let img = image(16);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(None, true));
    let mut cap = [0u8; 8];
    rig.dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 0);
    let generation = rig.dev.state().config_generation;

    rig.dev
        .swap_backend(Some(img.path()), Some("sha256-abc"))
        .unwrap();
    assert!(take_irq(&rig.dev));
    assert_ne!(rig.dev.state().irq.status() & interrupt::CONFIG_CHANGE, 0);
    assert_ne!(rig.dev.state().config_generation, generation);
    rig.dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 16);
    assert_eq!(rig.read_req(15, 512), (513, VIRTIO_BLK_S_OK));
    assert_eq!(rig.q.read(DATA, 1)[0], 15);

    rig.header(VIRTIO_BLK_T_GET_ID, 0);
    rig.q.add_chain(&[r(HDR, 16), w(DATA, 20), w(STATUS, 1)]);
    rig.run();
    assert_eq!(&rig.q.read(DATA, 11), b"sha256-abc\0");

    // Replace, then empty the slot again.
    let small = image(2);
    rig.dev.swap_backend(Some(small.path()), None).unwrap();
    assert_eq!(rig.dev.capacity(), 2);
    rig.dev.swap_backend(None, None).unwrap();
    assert_eq!(rig.dev.capacity(), 0);
}

#[test]
fn failed_swap_keeps_the_old_image() {
    let img = image(4);
    let mut dev = block(Some(img.path()), true);
    assert!(
        dev.swap_backend(Some(Path::new("/nonexistent/x.img")), None)
            .is_err()
    );
    assert!(
        dev.swap_backend(None, Some("123456789012345678901"))
            .is_err()
    );
    assert_eq!(dev.capacity(), 4);
    assert_eq!(dev.path(), Some(img.path()));
}

#[test]
fn write_zeroes_and_discard() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    let mut seg = 2u64.to_le_bytes().to_vec();
    seg.extend_from_slice(&3u32.to_le_bytes());
    seg.extend_from_slice(&0u32.to_le_bytes());
    rig.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    rig.q.write(DATA, &seg);
    rig.q.add_chain(&[r(HDR, 16), r(DATA, 16), w(STATUS, 1)]);
    assert_eq!(rig.run(), (1, VIRTIO_BLK_S_OK));
    let file = std::fs::read(img.path()).unwrap();
    assert_eq!(file.len(), 8 * 512);
    assert!(file[1024..2560].iter().all(|&b| b == 0));
    assert_eq!(file[2560], 5);
    assert_eq!(file[1023], 1);

    rig.header(VIRTIO_BLK_T_DISCARD, 0);
    rig.q.add_chain(&[r(HDR, 16), r(DATA, 16), w(STATUS, 1)]);
    assert_eq!(rig.run(), (1, VIRTIO_BLK_S_OK));
    // No segment at all.
    rig.header(VIRTIO_BLK_T_DISCARD, 0);
    rig.q.add_chain(&[r(HDR, 16), w(STATUS, 1)]);
    assert_eq!(rig.run().1, VIRTIO_BLK_S_IOERR);
}

#[test]
fn chain_without_writable_status_is_dropped() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    rig.header(VIRTIO_BLK_T_IN, 0);
    rig.q.add_chain(&[r(HDR, 16), r(DATA, 512)]);
    assert_eq!(rig.run().0, 0);
    assert_eq!(rig.dev.metrics().snapshot().errors, 1);
}

#[test]
fn buffers_outside_guest_memory_are_dropped() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    rig.header(VIRTIO_BLK_T_IN, 0);
    rig.q
        .add_chain(&[r(HDR, 16), w(MEM_SIZE - 256, 512), w(STATUS, 1)]);
    assert_eq!(rig.run().0, 0);
    rig.q
        .add_chain(&[r(u64::MAX - 4, 16), w(DATA, 512), w(STATUS, 1)]);
    assert_eq!(rig.run().0, 0);
    rig.q
        .add_chain(&[r(HDR, 16), w(DATA, u32::MAX), w(STATUS, 1)]);
    assert_eq!(rig.run().0, 0);
}

#[test]
fn header_in_a_writable_descriptor_or_truncated_is_an_error() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    rig.header(VIRTIO_BLK_T_IN, 0);
    rig.q.add_chain(&[w(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    assert_eq!(rig.run().1, VIRTIO_BLK_S_IOERR);
    rig.header(VIRTIO_BLK_T_IN, 0);
    rig.q.add_chain(&[r(HDR, 8), w(DATA, 512), w(STATUS, 1)]);
    assert_eq!(rig.run().1, VIRTIO_BLK_S_IOERR);
}

#[test]
fn descriptor_loop_terminates() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    rig.header(VIRTIO_BLK_T_IN, 0);
    // 0 -> 1 -> 0 -> ...: the chain is cut after queue-size descriptors.
    rig.q.set_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1);
    rig.q
        .set_desc(1, DATA, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 0);
    rig.q.push_avail(0);
    rig.dev.process_queue(0);
    assert_eq!(rig.q.used_idx(), 1);
    // Head index beyond the table.
    rig.q.push_avail(999);
    rig.dev.process_queue(0);
}

#[test]
fn bogus_avail_index_does_not_hang() {
    let img = image(8);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, block(Some(img.path()), false));
    // The driver claims 40000 new buffers in a 16-entry ring.
    rig.q.mock.avail().idx().store(40000);
    rig.dev.process_queue(0);
    assert!(rig.q.used_idx() <= 16);
}

#[test]
fn queue_eventfd_drives_processing_through_the_event_manager() {
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

    let img = image(8);
    let mem = guest_mem();
    let mut q = TestQueue::new(&mem, 0, 16);
    let mut dev = block(Some(img.path()), true);
    activate(&mut dev, &mem, vec![q.queue()]);
    let evt = dev.state().queue_evts[0].try_clone().unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(dev.clone());

    let mut h = VIRTIO_BLK_T_IN.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 12]);
    q.write(HDR, &h);
    q.add_chain(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    evt.write(1).unwrap();
    em.run_with_timeout(1000).unwrap();
    assert_eq!(q.used_idx(), 1);
    assert_eq!(q.read(STATUS, 1)[0], VIRTIO_BLK_S_OK);
}

#[test]
fn requests_complete_with_event_idx_negotiated() {
    let img = image(8);
    let mem = guest_mem();
    let mut q = TestQueue::new(&mem, 0, 16);
    let mut dev = block(Some(img.path()), true);
    let state = dev.state_mut();
    state.acked_features = state.avail_features;
    state.queues[0] = q.queue();
    dev.activate(mem.clone()).unwrap();
    assert!(dev.state().queues[0].event_idx_enabled());
    let mut h = VIRTIO_BLK_T_IN.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&3u64.to_le_bytes());
    for _ in 0..20 {
        q.write(HDR, &h);
        q.add_chain(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
        dev.process_queue(0);
        assert_eq!(q.read(STATUS, 1)[0], VIRTIO_BLK_S_OK);
    }
    assert_eq!(q.used_idx(), 20);
    // used_event is 0 in the driver's ring: it asked to hear about the first completion.
    assert!(take_irq(&dev));
}

#[test]
fn direct_io_drive_reads_and_writes_aligned_blocks() {
    let img = image(16);
    let dev = match Block::new(BlockConfig {
        drive_id: "direct".into(),
        path: Some(img.path().to_owned()),
        read_only: false,
        serial: None,
        direct_io: true,
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipping: O_DIRECT not supported where tempfiles live: {e}");
            return;
        }
    };
    assert_ne!(
        dev.state().avail_features & blk_features::VIRTIO_BLK_F_BLK_SIZE,
        0
    );
    let mut blk_size = [0u8; 4];
    dev.read_config(20, &mut blk_size);
    assert_eq!(u32::from_le_bytes(blk_size), 4096);
    let mem = guest_mem();
    let mut rig = Rig::new(&mem, dev);
    assert_eq!(rig.write_req(8, &[0x5a; 4096]), (1, VIRTIO_BLK_S_OK));
    assert_eq!(rig.read_req(8, 4096), (4097, VIRTIO_BLK_S_OK));
    assert!(rig.q.read(DATA, 4096).iter().all(|&b| b == 0x5a));
    assert_eq!(std::fs::read(img.path()).unwrap()[8 * 512], 0x5a);
    // Not 4 KiB aligned: depending on the host disk's block size the kernel serves it or
    // refuses it (EINVAL, IOERR to the guest); either way the request completes.
    let status = rig.read_req(1, 512).1;
    assert!(status == VIRTIO_BLK_S_OK || status == VIRTIO_BLK_S_IOERR);
}
