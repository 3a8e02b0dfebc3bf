//! virtio-rng: entropy for the guest from the host's getrandom(2).

pub mod device;
pub mod event_handler;

pub use device::Rng;
