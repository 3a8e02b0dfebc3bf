//! Devices the guest sees: legacy PIO devices (`legacy/`), and virtio-mmio devices
//! (`virtio/`). Every device is reached through a [`bus::Bus`] that the vCPU exit handler
//! dispatches to. `attach.rs` builds the virtio devices of a configuration and maps them.

pub mod attach;
pub mod bus;
pub mod legacy;
pub mod virtio;
