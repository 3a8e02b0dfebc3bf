//! Devices the guest sees: legacy PIO devices (`legacy/`), and virtio-mmio devices
//! (`virtio/`). Every device is reached through a [`bus::Bus`] that the vCPU exit handler
//! dispatches to.

pub mod bus;
pub mod legacy;
pub mod virtio;
