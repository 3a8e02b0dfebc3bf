//! ward-vmm: a KVM virtual machine monitor for one microVM per sandbox.
//!
//! [`Vmm`] boots a Linux guest from a [`VmConfig`]; `vstate` is the only module that calls
//! kvm-ioctls. See `docs/vmm.md`.

pub mod api;
pub mod arch;
pub mod boot;
pub mod config;
pub mod devices;
pub mod machine;
pub mod metrics;
pub mod seccomp;
pub mod vstate;

pub use config::VmConfig;
pub use machine::{MmioSlot, Subscriber, VmExit, Vmm, VmmError};
