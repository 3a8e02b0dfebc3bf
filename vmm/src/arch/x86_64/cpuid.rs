//! CPUID as the guest sees it: KVM's supported set, with each vCPU's APIC id and the
//! topology (every vCPU a core of one socket, one thread each) filled in, and the
//! hypervisor bit set so the guest looks for the KVM leaves (kvmclock, PV EOI).

use kvm_bindings::CpuId;

const HYPERVISOR: u32 = 1 << 31;
const HTT: u32 = 1 << 28;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Rewrites `cpuid` for vCPU `id` of `vcpus`.
pub fn normalize(cpuid: &mut CpuId, id: u8, vcpus: u8) {
    let id = u32::from(id);
    let n = u32::from(vcpus);
    // Bits of APIC id used for the core number.
    let core_bits = 32 - (n.max(1) - 1).leading_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                e.ebx = (id << 24) | (n << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= HYPERVISOR;
                if n > 1 {
                    e.edx |= HTT;
                } else {
                    e.edx &= !HTT;
                }
            }
            0x4 => {
                // Cores per package - 1; one thread per cache-sharing core.
                e.eax = (e.eax & 0x03ff_ffff & !(0xfff << 14)) | ((n - 1) << 26);
            }
            0xb => {
                e.edx = id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = n;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 => {
                // AMD: ApicIdCoreIdSize and NC (cores - 1).
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (n - 1);
            }
            0x8000_001e => {
                // AMD: extended APIC id; each vCPU its own compute unit.
                e.eax = id;
                e.ebx = id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_id_and_topology() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        normalize(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & HYPERVISOR, 0);
        assert_ne!(e[0].edx & HTT, 0);
        assert_eq!((e[1].eax, e[1].ebx, e[1].edx), (2, 4, 3));
    }
}
