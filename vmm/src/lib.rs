//! ward-vmm: a KVM virtual machine monitor for one microVM per sandbox.
//!
//! The only crate that calls kvm-ioctls (in `vstate`). See `docs/vmm.md`.

pub mod devices;
