//! virtio-vsock: the device (queues and config), packet parsing, the per-connection state
//! machine with credit flow control, and the hybrid Unix-socket host backend.

pub mod connection;
pub mod device;
pub mod event_handler;
pub mod packet;
pub mod unix;

pub use device::{Vsock, VsockError};
pub use unix::VsockUnixBackend;
