//! The messages the library and its init helper (`ward-agent init`) exchange over their
//! socketpair, framed as a 4-byte little-endian length followed by JSON.
//!
//! JSON keeps the helper free of any schema beyond serde; the framing survives specs far
//! larger than a SOCK_SEQPACKET datagram.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use serde::{Deserialize, Serialize};

/// The file descriptor number the init helper finds its socket on.
pub const INIT_SOCKET_FD: i32 = 3;

/// Environment variable telling the helper that fd [`INIT_SOCKET_FD`] is its socket.
pub const INIT_SOCKET_ENV: &str = "_WARD_INIT_SOCKET";

/// How the container's root filesystem is made inside its mount namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RootfsPlan {
    /// Bind an existing directory onto itself and pivot into it.
    Path(PathBuf),
    /// Mount overlayfs of `lower` (top first) with `upper`/`work` on `target`, after
    /// mounting each read-only layer device of `devices` on its directory.
    Overlay {
        devices: Vec<(PathBuf, PathBuf)>,
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
}

/// One namespace the init helper must create (`path: None`) or join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespacePlan {
    pub kind: LinuxNamespaceType,
    pub path: Option<PathBuf>,
}

/// What the helper does once it has its namespaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum InitMode {
    /// Build the container's rootfs, stop at the start barrier, exec `spec.process`.
    Create { rootfs: RootfsPlan },
    /// Join the namespaces of a running container and exec `process`.
    Exec { process: Box<Process> },
}

/// Everything the helper needs; sent once, first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub id: String,
    pub spec: Box<Spec>,
    pub mode: InitMode,
    pub namespaces: Vec<NamespacePlan>,
    /// Whether the helper's stdin is a pty slave that must become the controlling terminal.
    pub terminal: bool,
    /// cgroup v2 mounted at /sys/fs/cgroup (decides how a `cgroup` mount is made).
    pub cgroup_v2: bool,
}

/// Library → helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToInit {
    Config(Box<InitConfig>),
    /// uid/gid maps of the new user namespace are written.
    MapsWritten,
    /// Leave the create barrier and exec the process.
    Start,
}

/// Helper → library.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromInit {
    /// The helper unshared its user namespace; write maps to its /proc/<pid>.
    WriteMaps,
    /// The container process exists with this pid (in the library's pid namespace).
    Pid(i32),
    /// The rootfs is ready and the process waits at the start barrier.
    Ready,
    /// Something failed; the helper exits after sending this.
    Error(String),
}

/// Largest frame accepted: far above any real spec, low enough that a corrupt length
/// cannot make the reader allocate gigabytes.
pub const MAX_FRAME: usize = 64 << 20;

/// Writes one framed message.
pub fn send<T: Serialize>(stream: &mut UnixStream, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame)
}

/// Reads one framed message; `Ok(None)` on a clean EOF (the peer exec'd or exited).
pub fn recv<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_eof_is_none() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send(&mut a, &FromInit::Pid(42)).unwrap();
        send(&mut a, &FromInit::Error("boom".into())).unwrap();
        drop(a);
        assert!(matches!(
            recv::<FromInit>(&mut b).unwrap(),
            Some(FromInit::Pid(42))
        ));
        assert!(
            matches!(recv::<FromInit>(&mut b).unwrap(), Some(FromInit::Error(m)) if m == "boom")
        );
        assert!(recv::<FromInit>(&mut b).unwrap().is_none());
    }
}
