//! The container library: an OCI runtime bundle (or spec) plus read-only layers in, a
//! running container out, on whatever kernel this runs on (the host's in shared mode, the
//! guest's in vm mode). See docs/container.md.

pub mod capabilities;
pub mod cgroups;
pub mod devices;
pub mod error;
pub mod exec;
pub mod hooks;
pub mod init;
pub mod lifecycle;
pub mod mounts;
pub mod namespaces;
pub mod options;
pub mod process;
pub mod protocol;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod validate;

pub use cgroups::Stats;
pub use error::{Error, Result};
pub use exec::ExecProcess;
pub use lifecycle::{Container, ExitStatus, State, Status};
pub use options::{CreateOptions, DEFAULT_STATE_DIR, ProcessIo, Rootfs, Stdio};
