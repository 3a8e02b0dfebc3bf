//! `vsock-probe`: the two ends of ward's virtio-vsock and virtio-blk end-to-end checks. It
//! runs in the guest (built static for x86_64-unknown-linux-musl and put in the test
//! initrd) and on the VMM's host side (Unix sockets, the hybrid vsock scheme), so it uses
//! only std and declares the four socket calls std lacks for AF_VSOCK itself.
//!
//! Protocol on every stream: the client sends one line, then
//! - `PUT n\n`: the client sends n pattern bytes; the server answers `n checksum\n`.
//!   The client half-closes after sending (so do `ECHO` clients) and still reads.
//! - `GET n\n`: the server sends n pattern bytes and closes.
//! - `ECHO n\n`: the server echoes n bytes back.
//!
//! Pattern bytes are a function of their offset and a seed, so each end verifies what it got
//! against what was meant: `PUT` by the server's checksum, `GET` and `ECHO` by the client.
//!
//! ```text
//! vsock-probe pattern BYTES [SEED]                  pattern to stdout (disk images)
//! vsock-probe serve-vsock PORT                      guest server (threads, forever)
//! vsock-probe serve-unix PATH                       host server for guest-initiated streams
//! vsock-probe client-vsock CID PORT OP BYTES [CONNS]
//! vsock-probe client-uds UDS PORT OP BYTES [CONNS]  host side: CONNECT PORT first
//! vsock-probe read-seq DEV                          O_DIRECT 1 MiB reads of all of DEV
//! vsock-probe read-rand DEV COUNT                   O_DIRECT 4 KiB random reads, QD 1
//! ```
//! A client prints `OP BYTES conns=C ok secs=S mbps=M` or fails with exit 1.

// Short names (s = stream, n = bytes, t = target) read better in protocol code this small.
#![allow(clippy::many_single_char_names)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SHUT_WR: i32 = 1;
const CHUNK: usize = 64 * 1024;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

unsafe extern "C" {
    fn socket(domain: i32, ty: i32, proto: i32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut u8, len: *mut u32) -> i32;
    fn shutdown(fd: i32, how: i32) -> i32;
}

type Result<T> = std::result::Result<T, String>;

fn vsock_addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

fn check(ret: i32, what: &str) -> Result<i32> {
    if ret < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(ret)
}

/// A stream socket: a vsock fd (as a File) or a Unix stream.
enum Stream {
    Vsock(File, RawFd),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> Result<Self> {
        match self {
            Stream::Vsock(f, fd) => Ok(Stream::Vsock(
                f.try_clone().map_err(|e| e.to_string())?,
                *fd,
            )),
            Stream::Unix(s) => Ok(Stream::Unix(s.try_clone().map_err(|e| e.to_string())?)),
        }
    }

    fn shutdown_write(&self) {
        match self {
            // SAFETY: shutdown(2) on a socket this process owns.
            Stream::Vsock(_, fd) => unsafe {
                shutdown(*fd, SHUT_WR);
            },
            Stream::Unix(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Vsock(f, _) => f.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Vsock(f, _) => f.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn vsock_stream(fd: i32) -> Stream {
    // SAFETY: `fd` is a socket this process just created or accepted and owns alone.
    Stream::Vsock(unsafe { File::from_raw_fd(fd) }, fd)
}

/// Byte `i` of the pattern for `seed`.
fn fill(buf: &mut [u8], offset: u64, seed: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = offset + k as u64;
        // splitmix64 of the word index; the added constant keeps word 0 of seed 0 from
        // being all zeroes, which an unwritten disk would also read as.
        let mut z = ((i / 8) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        *b = z.to_le_bytes()[(i % 8) as usize];
    }
}

/// FNV-1a, 64 bit: independent of how the stream was cut into reads.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn pattern_sum(n: u64, seed: u64) -> u64 {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    while off < n {
        let len = (n - off).min(CHUNK as u64) as usize;
        fill(&mut buf[..len], off, seed);
        sum.update(&buf[..len]);
        off += len as u64;
    }
    sum.0
}

/// Sends `n` pattern bytes; returns their checksum.
fn send_pattern(s: &mut impl Write, n: u64) -> Result<u64> {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    while off < n {
        let len = (n - off).min(CHUNK as u64) as usize;
        fill(&mut buf[..len], off, 0);
        sum.update(&buf[..len]);
        s.write_all(&buf[..len])
            .map_err(|e| format!("send at {off}: {e}"))?;
        off += len as u64;
    }
    Ok(sum.0)
}

/// Reads exactly `n` bytes (or to EOF when `n` is None); returns (bytes, checksum).
fn recv(s: &mut impl Read, n: Option<u64>) -> Result<(u64, u64)> {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let want = n.map_or(CHUNK, |n| (n - got).min(CHUNK as u64) as usize);
        if want == 0 {
            break;
        }
        let r = s
            .read(&mut buf[..want])
            .map_err(|e| format!("recv at {got}: {e}"))?;
        if r == 0 {
            break;
        }
        sum.update(&buf[..r]);
        got += r as u64;
    }
    Ok((got, sum.0))
}

fn read_line(s: &mut impl Read) -> Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).map_err(|e| e.to_string())? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn serve_one(mut s: Stream) -> Result<()> {
    let req = read_line(&mut s)?;
    let (op, n) = req
        .split_once(' ')
        .ok_or_else(|| format!("bad request {req:?}"))?;
    let n: u64 = n.parse().map_err(|_| format!("bad length in {req:?}"))?;
    match op {
        "PUT" => {
            let (got, sum) = recv(&mut s, Some(n))?;
            s.write_all(format!("{got} {sum:016x}\n").as_bytes())
                .map_err(|e| e.to_string())?;
        }
        "GET" => {
            send_pattern(&mut s, n)?;
        }
        "ECHO" => {
            let mut buf = vec![0u8; CHUNK];
            let mut left = n;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let r = s.read(&mut buf[..want]).map_err(|e| e.to_string())?;
                if r == 0 {
                    break;
                }
                s.write_all(&buf[..r]).map_err(|e| e.to_string())?;
                left -= r as u64;
            }
        }
        _ => return Err(format!("unknown op {op:?}")),
    }
    s.shutdown_write();
    // Wait for the client to close so nothing is cut off by our close.
    let _ = recv(&mut s, None);
    Ok(())
}

fn spawn_serve(s: Stream) {
    std::thread::spawn(move || {
        if let Err(e) = serve_one(s) {
            eprintln!("vsock-probe server: {e}");
        }
    });
}

fn serve_vsock(port: u32) -> Result<()> {
    // SAFETY: socket(2) has no memory arguments.
    let fd = unsafe { socket(AF_VSOCK, SOCK_STREAM, 0) };
    let fd = check(fd, "socket")?;
    let addr = vsock_addr(u32::MAX, port); // VMADDR_CID_ANY
    let len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: `addr` is a live sockaddr_vm of `len` bytes.
    let r = unsafe { bind(fd, &raw const addr, len) };
    check(r, "bind")?;
    // SAFETY: listen(2) on the socket just bound.
    let r = unsafe { listen(fd, 128) };
    check(r, "listen")?;
    loop {
        // SAFETY: accept(2) without asking for the peer address.
        let c = unsafe { accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
        spawn_serve(vsock_stream(check(c, "accept")?));
    }
}

fn serve_unix(path: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| format!("bind {path}: {e}"))?;
    for s in l.incoming() {
        spawn_serve(Stream::Unix(s.map_err(|e| e.to_string())?));
    }
    Ok(())
}

enum Target {
    Vsock { cid: u32, port: u32 },
    Uds { path: String, port: u32 },
}

fn open(t: &Target) -> Result<Stream> {
    match t {
        Target::Vsock { cid, port } => {
            // SAFETY: socket(2) has no memory arguments.
            let fd = unsafe { socket(AF_VSOCK, SOCK_STREAM, 0) };
            let fd = check(fd, "socket")?;
            let addr = vsock_addr(*cid, *port);
            let len = std::mem::size_of::<SockaddrVm>() as u32;
            // SAFETY: `addr` is a live sockaddr_vm of `len` bytes.
            let r = unsafe { connect(fd, &raw const addr, len) };
            let s = vsock_stream(fd);
            check(r, &format!("connect to vsock {cid}:{port}"))?;
            Ok(s)
        }
        Target::Uds { path, port } => {
            let mut s = UnixStream::connect(path).map_err(|e| format!("connect {path}: {e}"))?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            if !line.starts_with("OK ") {
                return Err(format!("CONNECT {port} answered {line:?}"));
            }
            Ok(Stream::Unix(s))
        }
    }
}

fn client_one(t: &Target, op: &str, n: u64) -> Result<()> {
    let mut s = open(t)?;
    s.write_all(format!("{op} {n}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    match op {
        "PUT" => {
            // Half-close, then wait for the answer: proves shutdown(SHUT_WR) carries over
            // the vsock as a half-close in both directions.
            let sent = send_pattern(&mut s, n)?;
            s.shutdown_write();
            let line = read_line(&mut s)?;
            let want = format!("{n} {sent:016x}");
            if line != want {
                return Err(format!("PUT {n}: server got {line:?}, sent {want:?}"));
            }
        }
        "GET" => {
            let (got, sum) = recv(&mut s, None)?;
            let want = pattern_sum(n, 0);
            if (got, sum) != (n, want) {
                return Err(format!(
                    "GET {n}: got {got} bytes sum {sum:016x}, want sum {want:016x}"
                ));
            }
        }
        "ECHO" => {
            let mut w = s.try_clone()?;
            let writer = std::thread::spawn(move || {
                let r = send_pattern(&mut w, n);
                w.shutdown_write();
                r
            });
            let (got, sum) = recv(&mut s, Some(n))?;
            let sent = writer.join().map_err(|_| "writer panicked")??;
            if (got, sum) != (n, sent) {
                return Err(format!(
                    "ECHO {n}: got {got} bytes sum {sum:016x}, sent sum {sent:016x}"
                ));
            }
        }
        _ => return Err(format!("unknown op {op:?}")),
    }
    Ok(())
}

fn client(t: Target, op: &str, n: u64, conns: usize) -> Result<()> {
    let start = Instant::now();
    let t = std::sync::Arc::new(t);
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let (t, op) = (t.clone(), op.to_owned());
            std::thread::spawn(move || client_one(&t, &op, n))
        })
        .collect();
    let mut errors = Vec::new();
    for h in handles {
        if let Err(e) = h.join().map_err(|_| "client thread panicked".to_string())? {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(format!("{} of {conns} failed: {}", errors.len(), errors[0]));
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (n * conns as u64) as f64 / 1e6;
    println!(
        "{op} {n} conns={conns} ok secs={secs:.2} mbps={:.1}",
        mb / secs.max(1e-6)
    );
    Ok(())
}

const O_DIRECT: i32 = 0o40000;

/// Opens `dev` with O_DIRECT (no guest page cache: every read reaches the device) and
/// returns it with its size and a 4 KiB-aligned buffer of `len` bytes.
fn open_direct(dev: &str, len: usize) -> Result<(File, u64, Vec<u8>, usize)> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {dev}: {e}"))?;
    let size = f.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    let buf = vec![0u8; len + 4096];
    let align = (4096 - buf.as_ptr() as usize % 4096) % 4096;
    Ok((f, size, buf, align))
}

fn read_seq(dev: &str) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 1 << 20;
    let (f, size, mut buf, a) = open_direct(dev, BLOCK)?;
    let start = Instant::now();
    let mut off = 0;
    while off < size {
        let len = (size - off).min(BLOCK as u64) as usize;
        f.read_exact_at(&mut buf[a..a + len], off)
            .map_err(|e| format!("read {dev} at {off}: {e}"))?;
        off += len as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "seq-read bytes={size} secs={secs:.2} mbps={:.1}",
        size as f64 / 1e6 / secs
    );
    Ok(())
}

fn read_rand(dev: &str, count: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (f, size, mut buf, a) = open_direct(dev, 4096)?;
    let blocks = size / 4096;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let start = Instant::now();
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % blocks) * 4096;
        f.read_exact_at(&mut buf[a..a + 4096], off)
            .map_err(|e| format!("read {dev} at {off}: {e}"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "rand-read count={count} secs={secs:.2} iops={:.0}",
        count as f64 / secs
    );
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}; see the module docs"))
    };
    let num = |i: usize| -> Result<u64> {
        arg(i)?
            .parse()
            .map_err(|_| format!("argument {i} is not a number"))
    };
    let conns = |i: usize| -> Result<usize> { Ok(args.get(i).map_or(Ok(1), |_| num(i))? as usize) };
    match arg(1)? {
        "pattern" => {
            let n = num(2)?;
            let seed = args.get(3).map_or(Ok(0), |_| num(3))?;
            let mut out = std::io::stdout().lock();
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0;
            while off < n {
                let len = (n - off).min(CHUNK as u64) as usize;
                fill(&mut buf[..len], off, seed);
                out.write_all(&buf[..len]).map_err(|e| e.to_string())?;
                off += len as u64;
            }
            Ok(())
        }
        "serve-vsock" => serve_vsock(num(2)? as u32),
        "serve-unix" => serve_unix(arg(2)?),
        "client-vsock" => client(
            Target::Vsock {
                cid: num(2)? as u32,
                port: num(3)? as u32,
            },
            arg(4)?,
            num(5)?,
            conns(6)?,
        ),
        "client-uds" => client(
            Target::Uds {
                path: arg(2)?.to_owned(),
                port: num(3)? as u32,
            },
            arg(4)?,
            num(5)?,
            conns(6)?,
        ),
        "read-seq" => read_seq(arg(2)?),
        "read-rand" => read_rand(arg(2)?, num(3)?),
        other => Err(format!("unknown mode {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = run(&args) {
        eprintln!("vsock-probe: {e}");
        std::process::exit(1);
    }
}
