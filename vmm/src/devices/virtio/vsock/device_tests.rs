//! virtio-vsock end to end on the host: a mock guest driver on one side (TX/RX queues over
//! mock guest memory), real Unix sockets in a tempdir on the other.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::devices::virtio::GuestMemory;
use crate::devices::virtio::test_utils::*;
use crate::devices::virtio::vsock::connection::CONN_BUF_ALLOC;
use crate::devices::virtio::vsock::packet::*;

const GUEST_CID: u64 = 3;
const RX_BUFS: u16 = 16;
const RX_BASE: u64 = 0x10_0000;
const RX_STRIDE: u64 = 0x1_1000;
const RX_LEN: u32 = (HDR_LEN + 4096) as u32;
const TX_BUF: u64 = 0x80_0000;

struct Guest<'a> {
    _dir: tempfile::TempDir,
    uds: PathBuf,
    rxq: TestQueue<'a>,
    txq: TestQueue<'a>,
    dev: Vsock,
    rx_seen: u16,
    tx_seen: u16,
}

fn hdr(op: u16, src_port: u32, dst_port: u32, len: u32) -> PacketHeader {
    PacketHeader {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: VSOCK_TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

impl<'a> Guest<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        Self::with_rx_bufs(mem, RX_BUFS)
    }

    fn with_rx_bufs(mem: &'a GuestMemory, bufs: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let backend = VsockUnixBackend::new(&uds, GUEST_CID).unwrap();
        let mut dev = Vsock::new(GUEST_CID, backend).unwrap();
        let rxq = TestQueue::new(mem, 0, RX_BUFS);
        let txq = TestQueue::new(mem, 0x1_0000, 16);
        let evq = TestQueue::new(mem, 0x2_0000, 16);
        activate(&mut dev, mem, vec![rxq.queue(), txq.queue(), evq.queue()]);
        let mut g = Self {
            _dir: dir,
            uds,
            rxq,
            txq,
            dev,
            rx_seen: 0,
            tx_seen: 0,
        };
        for _ in 0..bufs {
            g.add_rx_buf();
        }
        g
    }

    fn add_rx_buf(&mut self) {
        let head = self.rxq.mock.avail().idx().load() % RX_BUFS;
        self.rxq.set_desc(
            head,
            RX_BASE + u64::from(head) * RX_STRIDE,
            RX_LEN,
            VRING_DESC_F_WRITE,
            0,
        );
        self.rxq.push_avail(head);
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.txq.write(TX_BUF, bytes);
        self.txq.add_chain(&[r(TX_BUF, bytes.len() as u32)]);
        self.dev.process_queue(TXQ);
        assert_eq!(
            self.txq.used_idx(),
            self.tx_seen.wrapping_add(1),
            "TX chain returned"
        );
        self.tx_seen = self.txq.used_idx();
    }

    fn send(&mut self, h: PacketHeader, payload: &[u8]) {
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(payload);
        self.send_raw(&b);
    }

    /// Collects what the device put on the RX queue, giving the buffers back.
    fn take_rx(&mut self) -> Vec<(PacketHeader, Vec<u8>)> {
        let mut out = Vec::new();
        while self.rx_seen != self.rxq.used_idx() {
            let (id, len) = self.rxq.used(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let data = self
                .rxq
                .read(RX_BASE + u64::from(id) * RX_STRIDE, len as usize);
            let h = PacketHeader::from_bytes(data[..HDR_LEN].try_into().unwrap());
            assert_eq!(h.len as usize, data.len() - HDR_LEN);
            out.push((h, data[HDR_LEN..].to_vec()));
            self.add_rx_buf();
        }
        if !out.is_empty() {
            self.dev.process_queue(RXQ);
        }
        out
    }

    /// Runs the backend until `pred` holds on the packets received so far (or times out).
    fn pump_until(
        &mut self,
        mut pred: impl FnMut(&[(PacketHeader, Vec<u8>)]) -> bool,
    ) -> Vec<(PacketHeader, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = self.take_rx();
        while !pred(&all) {
            assert!(
                Instant::now() < deadline,
                "timed out; got {:?}",
                all.iter().map(|p| p.0.op).collect::<Vec<_>>()
            );
            let mut pfd = libc::pollfd {
                fd: self.dev.backend().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&raw mut pfd, 1, 20) };
            self.dev.process_backend_events();
            all.extend(self.take_rx());
        }
        all
    }

    /// Host connects and the guest accepts; returns the host stream and the host-side port.
    fn host_connect(&mut self, guest_port: u32) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        s.write_all(format!("CONNECT {guest_port}\n").as_bytes())
            .unwrap();
        let pkts = self.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_REQUEST));
        let req = pkts.iter().find(|(h, _)| h.op == OP_REQUEST).unwrap().0;
        assert_eq!(
            (req.src_cid, req.dst_cid, req.dst_port),
            (HOST_CID, GUEST_CID, guest_port)
        );
        self.send(hdr(OP_RESPONSE, guest_port, req.src_port, 0), &[]);
        let expect = format!("OK {}\n", req.src_port);
        let mut line = vec![0; expect.len()];
        s.read_exact(&mut line).unwrap();
        assert_eq!(String::from_utf8(line).unwrap(), expect);
        (s, req.src_port)
    }
}

fn payload_of(pkts: &[(PacketHeader, Vec<u8>)]) -> Vec<u8> {
    pkts.iter()
        .filter(|(h, _)| h.op == OP_RW)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn config_space_holds_the_cid() {
    let mem = guest_mem();
    let g = Guest::new(&mem);
    let mut b = [0u8; 8];
    g.dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), GUEST_CID);
    assert!(
        Vsock::new(
            2,
            VsockUnixBackend::new(&g.uds.with_extension("x"), 2).unwrap()
        )
        .is_err()
    );
}

#[test]
fn host_initiated_connection_carries_data_both_ways() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (mut s, hport) = g.host_connect(1024);
    s.write_all(b"hello").unwrap();
    let pkts = g.pump_until(|p| payload_of(p).len() >= 5);
    assert_eq!(payload_of(&pkts), b"hello");
    let rw = pkts.iter().find(|(h, _)| h.op == OP_RW).unwrap().0;
    assert_eq!(
        (rw.src_port, rw.dst_port, rw.buf_alloc),
        (hport, 1024, CONN_BUF_ALLOC)
    );

    g.send(hdr(OP_RW, 1024, hport, 5), b"world");
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"world");
    assert!(g.dev.metrics().snapshot().requests >= 2);
}

#[test]
fn guest_initiated_connection_goes_to_uds_port() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let listener = UnixListener::bind(format!("{}_5000", g.uds.display())).unwrap();
    g.send(hdr(OP_REQUEST, 40000, 5000, 0), &[]);
    let (mut host, _) = listener.accept().unwrap();
    let pkts = g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_RESPONSE));
    let resp = pkts.iter().find(|(h, _)| h.op == OP_RESPONSE).unwrap().0;
    assert_eq!((resp.src_port, resp.dst_port), (5000, 40000));
    g.send(hdr(OP_RW, 40000, 5000, 4), b"ping");
    let mut b = [0u8; 4];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    host.write_all(b"pong").unwrap();
    let pkts = g.pump_until(|p| payload_of(p).len() >= 4);
    assert_eq!(payload_of(&pkts), b"pong");

    // Nobody listens on port 6000: RST.
    g.send(hdr(OP_REQUEST, 40001, 6000, 0), &[]);
    let pkts = g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_RST));
    assert!(
        pkts.iter()
            .any(|(h, _)| h.op == OP_RST && h.dst_port == 40001)
    );
}

#[test]
fn host_data_respects_guest_credit() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (mut s, hport) = g.host_connect(1024);
    // The guest has room for 1000 bytes only.
    let mut credit = hdr(OP_CREDIT_UPDATE, 1024, hport, 0);
    credit.buf_alloc = 1000;
    g.send(credit, &[]);
    s.write_all(&[7u8; 5000]).unwrap();
    let pkts = g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_CREDIT_REQUEST));
    assert_eq!(payload_of(&pkts).len(), 1000);
    // Nothing more until the guest frees space.
    std::thread::sleep(Duration::from_millis(50));
    g.dev.process_backend_events();
    assert!(payload_of(&g.take_rx()).is_empty());
    credit.fwd_cnt = 1000;
    g.send(credit, &[]);
    let pkts = g.pump_until(|p| payload_of(p).len() >= 1000);
    assert_eq!(payload_of(&pkts).len(), 1000);
    credit.buf_alloc = 1 << 20;
    g.send(credit, &[]);
    let pkts = g.pump_until(|p| payload_of(p).len() >= 3000);
    assert_eq!(payload_of(&pkts).len(), 3000);
}

#[test]
fn guest_overrunning_credit_is_reset_not_buffered() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (s, hport) = g.host_connect(1024);
    // The host never reads; the guest ignores credit and keeps sending 64 KiB packets.
    let chunk = vec![1u8; MAX_PKT_PAYLOAD];
    let mut reset = false;
    for _ in 0..64 {
        g.send(hdr(OP_RW, 1024, hport, chunk.len() as u32), &chunk);
        if g.take_rx().iter().any(|(h, _)| h.op == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(
        reset,
        "connection reset once the guest overran the advertised buffer"
    );
    assert_eq!(g.dev.backend().connection_count(), 0);
    drop(s);
}

#[test]
fn guest_sends_credit_update_when_host_consumes() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (mut s, hport) = g.host_connect(1024);
    let chunk = vec![1u8; 16 * 1024];
    for _ in 0..(CONN_BUF_ALLOC as usize / chunk.len()) {
        g.send(hdr(OP_RW, 1024, hport, chunk.len() as u32), &chunk);
    }
    let mut sink = vec![0u8; CONN_BUF_ALLOC as usize];
    s.read_exact(&mut sink).unwrap();
    let pkts = g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_CREDIT_UPDATE));
    let upd = pkts
        .iter()
        .rfind(|(h, _)| h.op == OP_CREDIT_UPDATE)
        .unwrap()
        .0;
    assert!(upd.fwd_cnt >= CONN_BUF_ALLOC / 2);
    g.send(hdr(OP_CREDIT_REQUEST, 1024, hport, 0), &[]);
    assert!(g.take_rx().iter().any(|(h, _)| h.op == OP_CREDIT_UPDATE));
}

#[test]
fn host_close_sends_shutdown_then_guest_rst_removes() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (s, hport) = g.host_connect(1024);
    drop(s);
    let pkts = g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_SHUTDOWN));
    let sd = pkts.iter().find(|(h, _)| h.op == OP_SHUTDOWN).unwrap().0;
    assert_eq!(sd.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert_eq!(g.dev.backend().connection_count(), 1);
    g.send(hdr(OP_RST, 1024, hport, 0), &[]);
    assert_eq!(g.dev.backend().connection_count(), 0);
}

#[test]
fn guest_shutdown_closes_host_side_and_is_confirmed_with_rst() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (mut s, hport) = g.host_connect(1024);
    g.send(hdr(OP_RW, 1024, hport, 3), b"bye");
    let mut h = hdr(OP_SHUTDOWN, 1024, hport, 0);
    h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(h, &[]);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
    assert!(g.take_rx().iter().any(|(h, _)| h.op == OP_RST));
    assert_eq!(g.dev.backend().connection_count(), 0);
}

#[test]
fn many_concurrent_connections() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let mut conns = Vec::new();
    for i in 0..40 {
        conns.push(g.host_connect(2000 + i));
    }
    for (i, (s, _)) in conns.iter_mut().enumerate() {
        s.write_all(format!("conn{i:02}").as_bytes()).unwrap();
    }
    let pkts = g.pump_until(|p| payload_of(p).len() >= 40 * 6);
    for i in 0..40u32 {
        let data: Vec<u8> = pkts
            .iter()
            .filter(|(h, _)| h.op == OP_RW && h.dst_port == 2000 + i)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(data, format!("conn{i:02}").as_bytes());
    }
    for (i, (s, hport)) in conns.iter_mut().enumerate() {
        g.send(hdr(OP_RW, 2000 + i as u32, *hport, 2), b"ok");
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
    }
    assert_eq!(g.dev.backend().connection_count(), 40);
}

#[test]
fn bad_handshake_is_dropped() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"HELLO there\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b = [0u8; 1];
    loop {
        g.dev.process_backend_events();
        s.set_nonblocking(true).unwrap();
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => panic!("unexpected data"),
            Err(_) => assert!(Instant::now() < deadline, "socket not closed"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(g.dev.backend().connection_count(), 0);
    assert!(g.take_rx().is_empty());
}

#[test]
fn malformed_tx_packets_are_dropped_or_reset() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (_s, hport) = g.host_connect(1024);
    // Truncated header, oversized length, length beyond the buffer.
    g.send_raw(&[0u8; 20]);
    g.send(hdr(OP_RW, 1024, hport, u32::MAX), &[]);
    g.send(hdr(OP_RW, 1024, hport, 100), b"short");
    // Wrong CIDs: dropped silently.
    let mut spoof = hdr(OP_REQUEST, 1, 5000, 0);
    spoof.src_cid = 99;
    g.send(spoof, &[]);
    assert!(g.take_rx().is_empty());
    // Unknown connection and unknown type: RST.
    g.send(hdr(OP_RW, 1, 1, 0), &[]);
    let mut dgram = hdr(OP_REQUEST, 2, 2, 0);
    dgram.type_ = 2;
    g.send(dgram, &[]);
    let rsts = g.take_rx().iter().filter(|(h, _)| h.op == OP_RST).count();
    assert_eq!(rsts, 2);
    // Unknown op on a live connection resets it.
    g.send(hdr(99, 1024, hport, 0), &[]);
    assert!(g.take_rx().iter().any(|(h, _)| h.op == OP_RST));
    assert_eq!(g.dev.backend().connection_count(), 0);
    // TX chain pointing outside guest memory.
    g.txq.add_chain(&[r(MEM_SIZE + 0x1000, 64)]);
    g.dev.process_queue(TXQ);
    assert!(g.dev.metrics().snapshot().errors >= 4);
}

#[test]
fn no_rx_buffers_counts_queue_full_and_loses_nothing() {
    let mem = guest_mem();
    let mut g = Guest::with_rx_bufs(&mem, 0);
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 77\n").unwrap();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        g.dev.process_backend_events();
    }
    assert!(g.dev.metrics().snapshot().queue_full > 0);
    g.add_rx_buf();
    g.dev.process_queue(RXQ);
    assert!(g.take_rx().iter().any(|(h, _)| h.op == OP_REQUEST));
}

#[test]
fn tiny_rx_buffer_is_returned_empty() {
    let mem = guest_mem();
    let mut g = Guest::with_rx_bufs(&mem, 0);
    g.rxq.set_desc(0, RX_BASE, 8, VRING_DESC_F_WRITE, 0);
    g.rxq.push_avail(0);
    g.send(hdr(OP_RW, 1, 1, 0), &[]);
    assert_eq!(g.rxq.used_idx(), 1);
    assert_eq!(g.rxq.used(0).1, 0);
}

#[test]
fn reset_drops_connections() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (mut s, _) = g.host_connect(1024);
    g.dev.reset();
    assert_eq!(g.dev.backend().connection_count(), 0);
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0);
}

#[test]
fn rx_buffer_with_room_for_a_header_only_does_not_spin() {
    let mem = guest_mem();
    let mut g = Guest::with_rx_bufs(&mem, 1);
    let (mut s, _) = g.host_connect(1024);
    // The one outstanding buffer shrinks to a bare header: no payload fits.
    let head = g.rxq.mock.avail().idx().load().wrapping_sub(1) % RX_BUFS;
    let addr = RX_BASE + u64::from(head) * RX_STRIDE;
    g.rxq
        .set_desc(head, addr, HDR_LEN as u32, VRING_DESC_F_WRITE, 0);
    let used = g.rxq.used_idx();
    s.write_all(b"data").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    g.dev.process_backend_events();
    g.dev.process_queue(RXQ);
    assert_eq!(g.rxq.used_idx(), used);
    // A proper buffer gets the data.
    g.rxq.set_desc(head, addr, RX_LEN, VRING_DESC_F_WRITE, 0);
    g.dev.process_queue(RXQ);
    assert_eq!(payload_of(&g.take_rx()), b"data");
}

#[test]
fn event_manager_drives_backend_and_queues() {
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
    use std::sync::{Arc, Mutex};

    let mem = guest_mem();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mut dev = Vsock::new(GUEST_CID, VsockUnixBackend::new(&uds, GUEST_CID).unwrap()).unwrap();
    let mut rxq = TestQueue::new(&mem, 0, RX_BUFS);
    let txq = TestQueue::new(&mem, 0x1_0000, 16);
    let evq = TestQueue::new(&mem, 0x2_0000, 16);
    activate(&mut dev, &mem, vec![rxq.queue(), txq.queue(), evq.queue()]);
    rxq.add_chain(&[w(RX_BASE, RX_LEN)]);
    let rx_evt = dev.state().queue_evts[RXQ].try_clone().unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(dev.clone());

    let mut s = UnixStream::connect(&uds).unwrap();
    s.write_all(b"CONNECT 1024\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rxq.used_idx() == 0 {
        assert!(Instant::now() < deadline, "no REQUEST delivered");
        em.run_with_timeout(100).unwrap();
    }
    let h = PacketHeader::from_bytes(rxq.read(RX_BASE, HDR_LEN)[..].try_into().unwrap());
    assert_eq!((h.op, h.dst_port), (OP_REQUEST, 1024));
    // A queue notification through its eventfd is handled too.
    rx_evt.write(1).unwrap();
    em.run_with_timeout(100).unwrap();
}

#[test]
fn guest_that_ignores_host_close_is_reset_after_timeout() {
    let mem = guest_mem();
    let mut g = Guest::new(&mem);
    let (s, hport) = g.host_connect(1024);
    drop(s);
    g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_SHUTDOWN));
    let start = Instant::now();
    let pkts = g.pump_until(|p| p.iter().any(|(h, _)| h.op == OP_RST));
    assert!(start.elapsed() >= super::super::unix::CLOSE_TIMEOUT / 2);
    assert!(
        pkts.iter()
            .any(|(h, _)| h.op == OP_RST && h.src_port == hport)
    );
    assert_eq!(g.dev.backend().connection_count(), 0);
}
