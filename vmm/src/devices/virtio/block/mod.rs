//! virtio-blk: file-backed drives, read-only or read-write, with flush, GET_ID, discard and
//! write-zeroes, and a backing file that can be swapped while the guest runs.

pub mod backend;
pub mod device;
pub mod event_handler;
pub mod request;

pub use device::{Block, BlockConfig, BlockError};
