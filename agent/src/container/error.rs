//! The container library's error type.
//!
//! Every variant names the thing that failed (container id, path, field) and the value, so a
//! message read in containerd's log is enough to find the cause.

use std::path::PathBuf;

/// Errors returned by the container library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {id}: invalid spec: {field}: {reason}")]
    InvalidSpec {
        id: String,
        field: &'static str,
        reason: String,
    },
    #[error("container {id}: rootfs {path} does not exist or is not a directory")]
    MissingRootfs { id: String, path: PathBuf },
    #[error("loading OCI spec from {path}: {reason}")]
    LoadSpec { path: PathBuf, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        source: nix::errno::Errno,
    },
    #[error("container {id}: init failed: {message}")]
    Init { id: String, message: String },
    #[error("container {id}: sync with init: {reason}")]
    Protocol { id: String, reason: String },
    #[error("container {id}: writing {map} for pid {pid}: {source} (mapping {value:?})")]
    IdMap {
        id: String,
        map: &'static str,
        pid: i32,
        value: String,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {op} {file}: {source}")]
    Cgroup {
        path: PathBuf,
        op: &'static str,
        file: String,
        source: std::io::Error,
    },
    #[error("cgroup: {0}")]
    CgroupSetup(String),
    #[error("container {id}: {op} not allowed in state {state}")]
    State {
        id: String,
        op: &'static str,
        state: &'static str,
    },
    #[error("{phase} hook {path}: {reason}")]
    Hook {
        phase: String,
        path: PathBuf,
        reason: String,
    },
    #[error("seccomp: {0}")]
    Seccomp(String),
}

impl Error {
    /// Shorthand for an I/O error on a path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a failed system call, described by `op` (which names its arguments).
    pub(crate) fn sys(op: impl Into<String>, source: nix::errno::Errno) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
