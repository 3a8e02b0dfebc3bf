//! The stdio stream listener: accepts a connection, reads its header, and splices the named
//! process's pipe (or pty master) with it until one side ends. Blocking threads, one per
//! connection, so the same code serves Unix sockets (host) and vsock (guest).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::registry::Registry;
use crate::protocol::stream::{MAX_HEADER_LEN, StreamHeader, StreamKind};

/// A connected stream socket of either family.
pub trait Conn: Read + Write + AsFd + Send + 'static {}
impl<T: Read + Write + AsFd + Send + 'static> Conn for T {}

/// Accepts on a Unix socket listener until it fails (it is closed at shutdown).
pub fn spawn_unix(listener: std::os::unix::net::UnixListener, registry: Arc<Registry>) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || serve(conn, &registry));
        }
    });
}

/// Accepts on vsock `port` of the guest.
pub fn spawn_vsock(port: u32, registry: Arc<Registry>) -> std::io::Result<()> {
    let listener = vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, port)?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || serve(conn, &registry));
        }
    });
    Ok(())
}

/// Serves one connection: header, answer, then raw bytes until EOF.
pub fn serve(mut conn: impl Conn, registry: &Registry) {
    let header = match read_line(&mut conn)
        .and_then(|l| StreamHeader::parse(&l).map_err(|e| e.to_string()))
    {
        Ok(h) => h,
        Err(why) => {
            let _ = writeln!(conn, "ERR {}", why.replace('\n', " "));
            return;
        }
    };
    let end = match take_end(registry, &header) {
        Ok(end) => end,
        Err(why) => {
            let _ = writeln!(conn, "ERR {why}");
            return;
        }
    };
    if conn.write_all(b"OK\n").is_err() {
        return;
    }
    match header.kind {
        StreamKind::Stdin => {
            if let (Ok(proc), Ok(dup)) = (
                registry.process(&header.container_id, header.exec_id.as_deref()),
                conn.as_fd().try_clone_to_owned(),
            ) {
                *proc.stdin_stream.lock().expect("lock") = Some(dup);
            }
            copy(&mut conn, &end);
        }
        StreamKind::Stdout | StreamKind::Stderr => {
            copy(&end, &mut conn);
            shutdown_write(&conn);
        }
    }
}

/// Reads the header line byte by byte (nothing past the newline belongs to the header).
fn read_line(conn: &mut impl Read) -> Result<String, String> {
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(0) => return Err("connection closed before the header was complete".into()),
            Ok(_) if byte[0] == b'\n' => return String::from_utf8(line).map_err(|e| e.to_string()),
            Ok(_) if line.len() >= MAX_HEADER_LEN => {
                return Err(format!("stream header longer than {MAX_HEADER_LEN} bytes"));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Takes the process's end for `header`; each pipe can be attached once, a pty master (stdin
/// and stdout both) is shared.
fn take_end(registry: &Registry, header: &StreamHeader) -> Result<File, String> {
    let proc = registry
        .process(&header.container_id, header.exec_id.as_deref())
        .map_err(|e| e.to_string())?;
    let mut ends = proc.ends.lock().expect("lock");
    let taken = if let Some(master) = &ends.terminal {
        match header.kind {
            StreamKind::Stderr => None,
            StreamKind::Stdin | StreamKind::Stdout => master.try_clone().ok(),
        }
    } else {
        match header.kind {
            StreamKind::Stdin => ends.stdin.take(),
            StreamKind::Stdout => ends.stdout.take(),
            StreamKind::Stderr => ends.stderr.take(),
        }
    };
    taken.ok_or_else(|| {
        format!(
            "{:?} of container {:?} exec {:?} is not available (not requested, or already attached)",
            header.kind, header.container_id, header.exec_id
        )
    })
}

/// Ends a socket in both directions through any descriptor of it (CloseStdin).
pub fn shutdown_both(fd: &OwnedFd) {
    let _ = nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        nix::sys::socket::Shutdown::Both,
    );
}

fn shutdown_write(conn: &impl AsFd) {
    let _ = nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(&conn.as_fd()),
        nix::sys::socket::Shutdown::Write,
    );
}

/// Copies until EOF or an error on either side. A pty master reports EIO once the last
/// slave is closed: that is its EOF.
fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
