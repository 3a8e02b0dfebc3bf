//! containerd's task service (API v2) on top of a [`crate::sandbox::Sandbox`]: task state,
//! stdio plumbing, events and metrics.

pub mod events;
pub mod io;
pub mod metrics;
mod rpc;
pub mod service;
pub mod state;
mod watch;

pub use service::TaskService;
