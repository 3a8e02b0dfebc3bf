//! The KVM VM: its in-kernel interrupt controllers and PIT, memory slots, and the irqfds
//! and ioeventfds that let devices signal and be signalled without a vCPU exit.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::layout;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("opening /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("{ioctl}: {source}")]
    Ioctl {
        ioctl: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("KVM_SET_USER_MEMORY_REGION slot {slot} at {addr:#x} ({size:#x} bytes): {source}")]
    MemoryRegion {
        slot: u32,
        addr: u64,
        size: u64,
        source: kvm_ioctls::Error,
    },
    #[error("KVM_IRQFD for GSI {gsi}: {source}")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("KVM_IOEVENTFD at {addr:#x} (datamatch {datamatch:?}): {source}")]
    Ioeventfd {
        addr: u64,
        datamatch: Option<u32>,
        source: kvm_ioctls::Error,
    },
    #[error("this KVM allows {max} vCPUs, the configuration asks for {asked}")]
    TooManyVcpus { max: usize, asked: u8 },
}

fn ioctl(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl {
        ioctl: name,
        source,
    }
}

/// Whether the VM gets KVM's in-kernel IOAPIC/PIC/LAPIC and PIT (a Linux guest needs them;
/// the polling test guests of the device tests do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Irqchip {
    InKernel,
    None,
}

/// A KVM VM.
#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens /dev/kvm and creates a VM with the platform devices Linux expects.
    pub fn new(irqchip: Irqchip) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let vm = Self { kvm, fd };
        if irqchip == Irqchip::InKernel {
            // Intel needs these private pages placed below 4 GiB, out of guest RAM; AMD
            // ignores them.
            vm.fd
                .set_tss_address(layout::KVM_TSS as usize)
                .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
            vm.fd
                .set_identity_map_address(layout::KVM_IDENTITY_MAP)
                .map_err(ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
            vm.fd
                .create_irq_chip()
                .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.fd.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;
        }
        Ok(vm)
    }

    /// Fails when KVM cannot run `vcpus` vCPUs.
    pub fn check_vcpus(&self, vcpus: u8) -> Result<(), VmError> {
        let max = self.kvm.get_max_vcpus();
        if usize::from(vcpus) > max {
            return Err(VmError::TooManyVcpus { max, asked: vcpus });
        }
        Ok(())
    }

    /// Gives every region of `mem` to the guest.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let addr = region.start_addr().0;
            let size = region.len();
            let host = mem
                .get_host_address(region.start_addr())
                .expect("a region's start is in guest memory");
            let kvm_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: addr,
                memory_size: size,
                userspace_addr: host as u64,
            };
            // SAFETY: the region describes a live mapping owned by `mem`, which the caller
            // keeps for as long as the VM exists (the VMM holds both until it exits).
            unsafe { self.fd.set_user_memory_region(kvm_region) }.map_err(|source| {
                VmError::MemoryRegion {
                    slot: slot as u32,
                    addr,
                    size,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Makes a write to `evt` raise `gsi` on the in-kernel IOAPIC.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::Irqfd { gsi, source })
    }

    /// Makes a guest write at MMIO address `addr` (of `datamatch`, if given) signal `evt`
    /// instead of exiting to the VMM.
    pub fn register_mmio_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: Option<u32>,
    ) -> Result<(), VmError> {
        let at = IoEventAddress::Mmio(addr);
        let res = match datamatch {
            Some(value) => self.fd.register_ioevent(evt, &at, value),
            None => self.fd.register_ioevent(evt, &at, kvm_ioctls::NoDatamatch),
        };
        res.map_err(|source| VmError::Ioeventfd {
            addr,
            datamatch,
            source,
        })
    }

    /// The CPUID KVM can offer on this host.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))
    }

    pub(crate) fn fd(&self) -> &VmFd {
        &self.fd
    }
}
