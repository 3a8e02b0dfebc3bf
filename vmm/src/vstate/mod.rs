//! KVM state: the VM, its guest memory and its vCPUs. The only module that calls
//! kvm-ioctls.

pub mod memory;
pub mod vcpu;
pub mod vm;
