//! One vsock stream connection between a guest port and a host Unix socket: its state machine
//! (virtio 1.2, 5.10.6.4–5.10.6.6) and credit-based flow control in both directions.
//!
//! Buffering is bounded both ways: host data is only read from the socket when the guest has
//! credit for it, and guest data the socket cannot take yet is kept up to the `buf_alloc` this
//! side advertised; a guest that sends more than that gets its connection reset.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

use super::packet::{
    HDR_LEN, HOST_CID, MAX_PKT_PAYLOAD, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST,
    OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, PacketHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TxPacket,
    VSOCK_TYPE_STREAM,
};

/// Receive buffer this side advertises to the guest for each connection.
pub const CONN_BUF_ALLOC: u32 = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// The host connected and asked for a guest port: REQUEST is (to be) sent, RESPONSE awaited.
    LocalInit,
    Established,
    /// The host closed its socket: SHUTDOWN sent, waiting for the guest's RST or SHUTDOWN.
    LocalClosed,
    /// Over; removed once its last packet (if any) has gone to the guest.
    Killed,
}

/// What the backend must do after the connection handled a guest packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Remove the connection now: no packet owed to the guest.
    Remove,
}

/// A stream connection.
#[derive(Debug)]
pub struct Connection {
    pub stream: UnixStream,
    /// Port on the host side of the vsock (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    pub guest_cid: u64,
    pub state: ConnState,
    /// The event set currently registered with the backend's epoll.
    pub registered: EventSet,
    /// Queued in the backend's RX list.
    pub in_rxq: bool,
    /// When the host side closed; the guest gets RST if it has not answered in time.
    pub closed_at: Option<std::time::Instant>,
    /// EPOLLIN seen and not yet drained.
    readable: bool,
    /// EPOLLHUP seen: the host closed its socket entirely (not just its write side).
    host_hung_up: bool,
    /// The host shut down its write side (`shutdown(SHUT_WR)`): SHUTDOWN(SEND) went to the
    /// guest, which may still send until it closes or the host closes entirely.
    host_shut_send: bool,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// Guest payload bytes handed to the host socket.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    credit_requested: bool,
    peer_shutdown: u32,
    tx_buf: VecDeque<u8>,
    /// Control packets owed to the guest: (op, flags).
    pending: VecDeque<(u16, u32)>,
}

impl Connection {
    fn new(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        state: ConnState,
    ) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            guest_cid,
            state,
            registered: EventSet::empty(),
            in_rxq: false,
            closed_at: None,
            readable: false,
            host_hung_up: false,
            host_shut_send: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            credit_requested: false,
            peer_shutdown: 0,
            tx_buf: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    /// A host-initiated connection (after `CONNECT <peer_port>`): asks the guest first.
    pub fn new_local(stream: UnixStream, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        let mut c = Self::new(
            stream,
            local_port,
            peer_port,
            guest_cid,
            ConnState::LocalInit,
        );
        c.pending.push_back((OP_REQUEST, 0));
        c
    }

    /// A guest-initiated connection whose host socket is connected: answers RESPONSE.
    pub fn new_peer(stream: UnixStream, req: &PacketHeader) -> Self {
        let mut c = Self::new(
            stream,
            req.dst_port,
            req.src_port,
            req.src_cid,
            ConnState::Established,
        );
        c.update_peer_credit(req);
        c.pending.push_back((OP_RESPONSE, 0));
        c
    }

    /// How many more payload bytes the guest can take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, hdr: &PacketHeader) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    fn can_send_data(&self) -> bool {
        self.state == ConnState::Established
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && !self.host_shut_send
    }

    /// Whether this connection has a packet for the guest right now.
    pub fn has_rx(&self) -> bool {
        // Out of credit with data waiting: one CREDIT_REQUEST is owed.
        !self.pending.is_empty()
            || (self.readable
                && self.can_send_data()
                && (self.peer_credit() > 0 || !self.credit_requested))
    }

    /// The epoll events this connection wants on its socket.
    pub fn interest(&self) -> EventSet {
        let mut e = EventSet::empty();
        // Read only what the guest has credit for; wait for the guest otherwise.
        if !self.readable && self.can_send_data() && self.peer_credit() > 0 {
            e |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() && self.state != ConnState::Killed {
            e |= EventSet::OUT;
        }
        // After a host half-close only the full close is still news. EPOLLIN would fire
        // forever on the shut read side, so ask for nothing but the hang-up.
        if self.host_shut_send && !self.host_hung_up && self.state == ConnState::Established {
            e |= EventSet::HANG_UP;
        }
        e
    }

    /// Resets the connection: RST to the guest, then removal.
    pub fn kill(&mut self) {
        self.state = ConnState::Killed;
        self.readable = false;
        self.tx_buf.clear();
        self.pending.clear();
        self.pending.push_back((OP_RST, 0));
    }

    pub fn is_done(&self) -> bool {
        self.state == ConnState::Killed && self.pending.is_empty()
    }

    /// The socket is ready (`EPOLLIN` / `EPOLLOUT` / hang-up).
    pub fn notify(&mut self, events: EventSet) {
        if events
            .intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR)
        {
            // Hang-up is found by the read returning 0 (after any data still buffered).
            self.readable = true;
        }
        if events.contains(EventSet::HANG_UP) {
            self.host_hung_up = true;
            if self.host_shut_send && self.state == ConnState::Established {
                // Half-closed before, gone now: the guest must stop sending too.
                self.close_locally();
            }
        }
        if events.contains(EventSet::OUT) {
            self.flush_tx();
        }
    }

    /// The host socket is gone: SHUTDOWN for both directions is owed to the guest, which
    /// answers with RST (or is reset after a timeout by the backend).
    fn close_locally(&mut self) {
        self.readable = false;
        self.state = ConnState::LocalClosed;
        self.tx_buf.clear();
        self.pending
            .push_back((OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND));
    }

    /// Writes as much of `tx_buf` as the socket takes.
    fn flush_tx(&mut self) {
        while !self.tx_buf.is_empty() {
            let (a, _) = self.tx_buf.as_slices();
            match self.stream.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!(
                        "vsock: port {}: host socket write failed: {e}",
                        self.local_port
                    );
                    self.kill();
                    return;
                }
            }
        }
        self.after_progress();
    }

    /// Tells the guest about freed buffer space once a good part of it is free again, and
    /// finishes a guest-side close once everything reached the host.
    fn after_progress(&mut self) {
        if self.state == ConnState::Killed {
            return;
        }
        if self.tx_buf.is_empty() {
            if self.peer_shutdown & SHUTDOWN_SEND != 0 {
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
            if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                // The guest closed: everything it sent is in the host socket, so confirm.
                self.kill();
                return;
            }
        }
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CONN_BUF_ALLOC / 2 {
            self.owe(OP_CREDIT_UPDATE);
        }
    }

    /// Handles a packet the guest sent on this connection.
    pub fn send_pkt(&mut self, pkt: &TxPacket) -> Outcome {
        let hdr = &pkt.hdr;
        if hdr.op == OP_RST {
            return Outcome::Remove;
        }
        if self.state == ConnState::Killed {
            return Outcome::Continue;
        }
        self.update_peer_credit(hdr);
        match (hdr.op, self.state) {
            (OP_RESPONSE, ConnState::LocalInit) => {
                self.state = ConnState::Established;
                let ok = format!("OK {}\n", self.local_port);
                // A fresh socket always has room for a line; if not, the host end is broken.
                if self.stream.write_all(ok.as_bytes()).is_err() {
                    self.kill();
                }
            }
            (OP_RW, ConnState::Established) => {
                if self.peer_shutdown & SHUTDOWN_SEND != 0 {
                    self.kill();
                } else {
                    self.push_tx(&pkt.payload);
                }
            }
            (OP_RW, ConnState::LocalClosed) => {
                // The host is gone; the data has nowhere to go but still counts as consumed.
                self.fwd_cnt += Wrapping(pkt.payload.len() as u32);
            }
            (OP_CREDIT_UPDATE, _) => {}
            (OP_CREDIT_REQUEST, _) => self.owe(OP_CREDIT_UPDATE),
            (OP_SHUTDOWN, ConnState::LocalClosed) => self.kill(),
            (OP_SHUTDOWN, _) => {
                self.peer_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.after_progress();
            }
            _ => {
                log::debug!(
                    "vsock: port {}: unexpected op {} in state {:?}",
                    self.local_port,
                    hdr.op,
                    self.state
                );
                self.kill();
            }
        }
        Outcome::Continue
    }

    /// Queues a control packet unless the same one is already owed: a guest repeating
    /// requests while giving no RX buffers must not grow this queue.
    fn owe(&mut self, op: u16) {
        if !self.pending.contains(&(op, 0)) {
            self.pending.push_back((op, 0));
        }
    }

    fn push_tx(&mut self, data: &[u8]) {
        if self.tx_buf.len() + data.len() > CONN_BUF_ALLOC as usize {
            log::warn!(
                "vsock: port {}: guest overran its credit, resetting",
                self.local_port
            );
            self.kill();
            return;
        }
        let mut written = 0;
        if self.tx_buf.is_empty() {
            while written < data.len() {
                match self.stream.write(&data[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!(
                            "vsock: port {}: host socket write failed: {e}",
                            self.local_port
                        );
                        self.kill();
                        return;
                    }
                }
            }
        }
        self.fwd_cnt += Wrapping(written as u32);
        self.tx_buf.extend(&data[written..]);
        self.after_progress();
    }

    fn header(&mut self, op: u16, flags: u32, len: u32) -> PacketHeader {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: VSOCK_TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Produces the next packet for the guest: its header, and for RW the payload length in
    /// `buf`. `room` is how many bytes the guest's RX buffer holds (header included).
    /// `None` when nothing could be produced after all (the socket had no data).
    pub fn recv_pkt(&mut self, buf: &mut [u8], room: usize) -> Option<(PacketHeader, usize)> {
        if let Some((op, flags)) = self.pending.pop_front() {
            return Some((self.header(op, flags, 0), 0));
        }
        if !(self.readable && self.can_send_data()) {
            return None;
        }
        let credit = self.peer_credit() as usize;
        if credit == 0 {
            if !self.credit_requested {
                self.credit_requested = true;
                return Some((self.header(OP_CREDIT_REQUEST, 0, 0), 0));
            }
            return None;
        }
        let max = room
            .saturating_sub(HDR_LEN)
            .min(credit)
            .min(MAX_PKT_PAYLOAD)
            .min(buf.len());
        if max == 0 {
            return None;
        }
        loop {
            match self.stream.read(&mut buf[..max]) {
                Ok(0) if self.host_hung_up => {
                    // The host closed: tell the guest neither direction carries data any more.
                    self.close_locally();
                    let (op, flags) = self.pending.pop_back().expect("just queued");
                    return Some((self.header(op, flags, 0), 0));
                }
                Ok(0) => {
                    // The host only shut its write side (a Unix socket closed entirely also
                    // reports EPOLLHUP, seen above): the guest reads EOF and may still send.
                    self.readable = false;
                    self.host_shut_send = true;
                    return Some((self.header(OP_SHUTDOWN, SHUTDOWN_SEND, 0), 0));
                }
                Ok(n) => {
                    if n < max {
                        // Probably drained; epoll says when there is more.
                        self.readable = false;
                    }
                    self.rx_cnt += Wrapping(n as u32);
                    return Some((self.header(OP_RW, 0, n as u32), n));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return None;
                }
                Err(e) => {
                    log::debug!(
                        "vsock: port {}: host socket read failed: {e}",
                        self.local_port
                    );
                    self.kill();
                    return self
                        .pending
                        .pop_front()
                        .map(|(op, f)| (self.header(op, f, 0), 0));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(op: u16, buf_alloc: u32, fwd_cnt: u32, payload: &[u8]) -> TxPacket {
        TxPacket {
            hdr: PacketHeader {
                src_cid: 3,
                dst_cid: HOST_CID,
                src_port: 1024,
                dst_port: 5000,
                len: payload.len() as u32,
                type_: VSOCK_TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc,
                fwd_cnt,
            },
            payload: payload.to_vec(),
        }
    }

    fn established() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Connection::new_peer(a, &pkt(OP_REQUEST, 4096, 0, &[]).hdr);
        let mut buf = [0u8; 64];
        assert_eq!(c.recv_pkt(&mut buf, 64).unwrap().0.op, OP_RESPONSE);
        (c, b)
    }

    #[test]
    fn repeated_credit_requests_do_not_accumulate() {
        let (mut c, _peer) = established();
        for _ in 0..10_000 {
            c.send_pkt(&pkt(OP_CREDIT_REQUEST, 4096, 0, &[]));
        }
        assert_eq!(c.pending.len(), 1);
    }

    #[test]
    fn credit_accounting_wraps() {
        let (mut c, mut peer) = established();
        // Counters near the u32 wrap-around.
        c.rx_cnt = Wrapping(u32::MAX - 10);
        c.send_pkt(&pkt(OP_CREDIT_UPDATE, 100, u32::MAX - 10, &[]));
        assert_eq!(c.peer_credit(), 100);
        peer.write_all(&[1u8; 50]).unwrap();
        c.notify(EventSet::IN);
        let mut buf = vec![0u8; 4096];
        let (h, n) = c.recv_pkt(&mut buf, 4096).unwrap();
        assert_eq!((h.op, n), (OP_RW, 50));
        assert_eq!(c.peer_credit(), 50);
        c.send_pkt(&pkt(
            OP_CREDIT_UPDATE,
            100,
            (u32::MAX - 10).wrapping_add(50),
            &[],
        ));
        assert_eq!(c.peer_credit(), 100);
    }

    #[test]
    fn host_half_close_lets_the_guest_answer() {
        let (mut c, mut peer) = established();
        peer.write_all(b"ask").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        c.notify(EventSet::IN | EventSet::READ_HANG_UP);
        let mut buf = vec![0u8; 4096];
        let (h, n) = c.recv_pkt(&mut buf, 4096).unwrap();
        assert_eq!((h.op, &buf[..n]), (OP_RW, &b"ask"[..]));
        c.readable = true;
        let (h, _) = c.recv_pkt(&mut buf, 4096).unwrap();
        assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(c.interest(), EventSet::HANG_UP);
        c.send_pkt(&pkt(OP_RW, 4096, 0, b"answer"));
        let mut got = [0u8; 6];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"answer");
        // Then the host closes entirely: the guest is told both directions are shut.
        drop(peer);
        c.notify(EventSet::HANG_UP);
        let (h, _) = c.recv_pkt(&mut buf, 4096).unwrap();
        assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND));
        assert_eq!(c.state, ConnState::LocalClosed);
        assert!(c.interest().is_empty());
    }

    #[test]
    fn data_after_guest_shutdown_send_resets() {
        let (mut c, _peer) = established();
        let mut sd = pkt(OP_SHUTDOWN, 4096, 0, &[]);
        sd.hdr.flags = SHUTDOWN_SEND;
        c.send_pkt(&sd);
        c.send_pkt(&pkt(OP_RW, 4096, 0, b"late"));
        let mut buf = [0u8; 64];
        assert_eq!(c.recv_pkt(&mut buf, 64).unwrap().0.op, OP_RST);
        assert!(c.is_done());
    }
}
