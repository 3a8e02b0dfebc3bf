//! The hybrid Unix-socket vsock backend (Firecracker's scheme). Host-initiated: a host process
//! connects to `<uds>`, writes `CONNECT <port>\n`, and once the guest accepts reads
//! `OK <hostport>\n`. Guest-initiated: a connection to host port P is connected to `<uds>_P`.
//!
//! The backend has its own epoll set holding the listener and every socket; the VMM's event
//! loop watches that one fd and calls [`VsockUnixBackend::process_events`].

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{ConnState, Connection, Outcome};
use super::packet::{HOST_CID, OP_REQUEST, OP_RST, PacketHeader, TxPacket, VSOCK_TYPE_STREAM};

/// Open connections per VM; a guest asking for more gets RST.
pub const MAX_CONNECTIONS: usize = 512;
/// Host clients connected but not done with `CONNECT <port>\n`.
const MAX_HANDSHAKES: usize = 64;
/// Longest handshake line: "CONNECT 4294967295\n" is 19 bytes.
const MAX_HANDSHAKE_LEN: usize = 32;
/// RST replies to packets for unknown connections waiting for RX buffers.
const MAX_ORPHAN_RSTS: usize = 256;
/// How long the guest has to answer the SHUTDOWN sent when the host closed its socket before
/// the connection is reset (as Firecracker does), so it cannot linger forever.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// First port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum UnixBackendError {
    #[error("cannot bind vsock socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the vsock backend's epoll: {0}")]
    Epoll(std::io::Error),
    #[error("cannot create the vsock close timer: {0}")]
    Timer(vmm_sys_util::errno::Error),
}

/// (host port, guest port)
type ConnKey = (u32, u32);

struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Host side of the vsock device.
pub struct VsockUnixBackend {
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    close_timer: TimerFd,
    close_timer_armed: bool,
    guest_cid: u64,
    conns: HashMap<ConnKey, Connection>,
    by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    rxq: VecDeque<ConnKey>,
    orphan_rsts: VecDeque<PacketHeader>,
    next_local_port: u32,
}

impl std::fmt::Debug for VsockUnixBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockUnixBackend")
            .field("uds_path", &self.uds_path)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl VsockUnixBackend {
    /// Listens on `uds_path` (a stale socket file left by a previous VMM is replaced).
    pub fn new(uds_path: &Path, guest_cid: u64) -> Result<Self, UnixBackendError> {
        let bind_err = |source| UnixBackendError::Bind {
            path: uds_path.to_owned(),
            source,
        };
        if std::fs::symlink_metadata(uds_path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(uds_path).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(UnixBackendError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, listener.as_raw_fd() as u64),
            )
            .map_err(UnixBackendError::Epoll)?;
        let close_timer = TimerFd::new().map_err(UnixBackendError::Timer)?;
        epoll
            .ctl(
                ControlOperation::Add,
                close_timer.as_raw_fd(),
                EpollEvent::new(EventSet::IN, close_timer.as_raw_fd() as u64),
            )
            .map_err(UnixBackendError::Epoll)?;
        Ok(Self {
            uds_path: uds_path.to_owned(),
            listener,
            epoll,
            close_timer,
            close_timer_armed: false,
            guest_cid,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            rxq: VecDeque::new(),
            orphan_rsts: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
        })
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Handles whatever the sockets reported, without blocking.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        // Handling one event can make another fd ready (an accepted socket that already holds
        // its CONNECT line), so go round until nothing is ready, a bounded number of times.
        for _ in 0..16 {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("vsock: epoll_wait failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.data() as RawFd;
                if fd == self.listener.as_raw_fd() {
                    self.accept();
                } else if fd == self.close_timer.as_raw_fd() {
                    self.expire_closed();
                } else if self.handshakes.contains_key(&fd) {
                    self.handshake(fd);
                } else if let Some(&key) = self.by_fd.get(&fd) {
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.notify(ev.event_set());
                    }
                    self.refresh(key);
                }
            }
            if n == 0 {
                return;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.handshakes.len() >= MAX_HANDSHAKES {
                        log::warn!("vsock: too many pending host connections, dropping one");
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if stream.set_nonblocking(true).is_err()
                        || self
                            .epoll
                            .ctl(
                                ControlOperation::Add,
                                fd,
                                EpollEvent::new(EventSet::IN, fd as u64),
                            )
                            .is_err()
                    {
                        continue;
                    }
                    self.handshakes.insert(
                        fd,
                        Handshake {
                            stream,
                            line: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        log::warn!("vsock: accept on {} failed: {e}", self.uds_path.display());
                    }
                    return;
                }
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line one byte at a time, so no byte meant for the guest is
    /// consumed before the connection exists.
    fn handshake(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match hs.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&hs.line),
                Ok(1) if hs.line.len() < MAX_HANDSHAKE_LEN => hs.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EOF, a line too long, or a broken socket.
                Ok(_) | Err(_) => break None,
            }
        };
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let Some(peer_port) = port else {
            log::debug!(
                "vsock: bad handshake {:?}",
                String::from_utf8_lossy(&hs.line)
            );
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!("vsock: connection limit reached, refusing host connection");
            return;
        }
        let local_port = self.allocate_local_port(peer_port);
        let conn = Connection::new_local(hs.stream, local_port, peer_port, self.guest_cid);
        self.insert(conn);
    }

    fn allocate_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn insert(&mut self, conn: Connection) {
        let key = (conn.local_port, conn.peer_port);
        self.by_fd.insert(conn.stream.as_raw_fd(), key);
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    /// Re-syncs a connection's epoll interest and RX queueing with its state, removing it
    /// once it is done.
    fn refresh(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.is_done() {
            self.remove(key);
            return;
        }
        if c.state == ConnState::LocalClosed && c.closed_at.is_none() {
            c.closed_at = Some(Instant::now());
            if !self.close_timer_armed {
                self.arm_close_timer(CLOSE_TIMEOUT);
            }
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let want = c.interest();
        if want != c.registered {
            let fd = c.stream.as_raw_fd();
            // An fd with no interest is taken out of the set entirely: epoll always reports
            // hang-ups, which would spin the loop for a connection waiting on guest credit.
            let op = if want.is_empty() {
                ControlOperation::Delete
            } else if c.registered.is_empty() {
                ControlOperation::Add
            } else {
                ControlOperation::Modify
            };
            if let Err(e) = self.epoll.ctl(op, fd, EpollEvent::new(want, fd as u64)) {
                log::warn!("vsock: epoll_ctl for port {} failed: {e}", c.local_port);
            }
            c.registered = want;
        }
        if c.has_rx() && !c.in_rxq {
            c.in_rxq = true;
            self.rxq.push_back(key);
        }
    }

    fn arm_close_timer(&mut self, after: Duration) {
        match self.close_timer.reset(after, None) {
            Ok(()) => self.close_timer_armed = true,
            Err(e) => log::warn!("vsock: cannot arm the close timer: {e}"),
        }
    }

    /// Resets connections whose guest did not answer the host's close in time.
    fn expire_closed(&mut self) {
        let _ = self.close_timer.wait();
        self.close_timer_armed = false;
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut expired = Vec::new();
        for (key, c) in &self.conns {
            if let (ConnState::LocalClosed, Some(t)) = (c.state, c.closed_at) {
                match CLOSE_TIMEOUT.checked_sub(now.duration_since(t)) {
                    Some(left) if !left.is_zero() => {
                        next = Some(next.map_or(left, |n| n.min(left)));
                    }
                    _ => expired.push(*key),
                }
            }
        }
        for key in expired {
            if let Some(c) = self.conns.get_mut(&key) {
                log::debug!("vsock: port {}: guest did not close in time", c.local_port);
                c.kill();
            }
            self.refresh(key);
        }
        if let Some(d) = next {
            self.arm_close_timer(d);
        }
    }

    fn remove(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.remove(&key) {
            self.by_fd.remove(&c.stream.as_raw_fd());
            // Dropping the socket also takes it out of the epoll set.
        }
    }

    fn orphan_rst(&mut self, hdr: &PacketHeader) {
        if hdr.op == OP_RST || self.orphan_rsts.len() >= MAX_ORPHAN_RSTS {
            return;
        }
        self.orphan_rsts.push_back(PacketHeader {
            src_cid: HOST_CID,
            dst_cid: hdr.src_cid,
            src_port: hdr.dst_port,
            dst_port: hdr.src_port,
            len: 0,
            type_: VSOCK_TYPE_STREAM,
            op: OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    /// Takes a packet from the guest's TX queue.
    pub fn send_pkt(&mut self, pkt: &TxPacket) {
        let hdr = &pkt.hdr;
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            log::debug!("vsock: dropping packet {} -> {}", hdr.src_cid, hdr.dst_cid);
            return;
        }
        if hdr.type_ != VSOCK_TYPE_STREAM {
            self.orphan_rst(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if let Some(c) = self.conns.get_mut(&key) {
            if c.send_pkt(pkt) == Outcome::Remove {
                self.remove(key);
            } else {
                self.refresh(key);
            }
            return;
        }
        if hdr.op != OP_REQUEST {
            self.orphan_rst(hdr);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!(
                "vsock: connection limit reached, refusing guest port {}",
                hdr.src_port
            );
            self.orphan_rst(hdr);
            return;
        }
        let path = PathBuf::from(format!("{}_{}", self.uds_path.display(), hdr.dst_port));
        match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => self.insert(Connection::new_peer(stream, hdr)),
            Err(e) => {
                log::debug!("vsock: guest connection to {} refused: {e}", path.display());
                self.orphan_rst(hdr);
            }
        }
    }

    /// Whether a packet for the guest is waiting.
    pub fn has_rx(&self) -> bool {
        !self.orphan_rsts.is_empty() || !self.rxq.is_empty()
    }

    /// Produces the next packet for the guest into an RX buffer of `room` bytes: the header,
    /// and for RW its payload in `buf[..len]`. `None` if nothing was produced.
    pub fn recv_pkt(&mut self, buf: &mut [u8], room: usize) -> Option<(PacketHeader, usize)> {
        if let Some(h) = self.orphan_rsts.pop_front() {
            return Some((h, 0));
        }
        // Each queued connection gets one try: one that produces nothing but still wants to
        // (say, the guest's buffer is too small for any payload) is queued again behind the
        // others, and must not be retried forever here.
        for _ in 0..self.rxq.len() {
            let Some(key) = self.rxq.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.in_rxq = false;
            let pkt = c.recv_pkt(buf, room);
            self.refresh(key);
            if pkt.is_some() {
                return pkt;
            }
        }
        None
    }

    /// The guest driver reset the device: every connection is gone.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.by_fd.clear();
        self.rxq.clear();
        self.orphan_rsts.clear();
    }
}

impl AsRawFd for VsockUnixBackend {
    /// Readable when any socket of the backend has something to handle.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let s = s.strip_suffix('\r').unwrap_or(s);
    s.strip_prefix("CONNECT ")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_connect;

    #[test]
    fn connect_line() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 1024\r"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(&[0xff, 0xfe]), None);
    }
}
