//! CPUID as the guest sees it: KVM's supported set, with each vCPU's APIC id and the
//! topology (every vCPU a core of one socket, one thread each) filled in, and the
//! hypervisor bit set so the guest looks for the KVM leaves (kvmclock, PV EOI).

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

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
    // Leaf 0xb: KVM offers only sub-leaf 0 (zeros). Without the core level a guest sees
    // every vCPU as its own package, so the leaf is rebuilt: SMT level (1 thread), core
    // level (`n` cores), terminator.
    let max_basic = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    if max_basic >= 0xb {
        cpuid.retain(|e| e.function != 0xb);
        let levels = [
            (0, 1, LEVEL_SMT << 8),
            (core_bits, n, (LEVEL_CORE << 8) | 1),
            (0, 0, 2),
        ];
        for (index, (eax, ebx, ecx)) in levels.into_iter().enumerate() {
            // Pushing fails only past KVM_MAX_CPUID_ENTRIES, far above what KVM offers.
            let _ = cpuid.push(kvm_cpuid_entry2 {
                function: 0xb,
                index: index as u32,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                eax,
                ebx,
                ecx,
                edx: id,
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_id_and_topology() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0xd,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff,
                ..Default::default()
            },
            // What KVM offers: sub-leaf 0 only.
            kvm_cpuid_entry2 {
                function: 0xb,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        normalize(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[1].ebx >> 24, 3);
        assert_eq!((e[1].ebx >> 16) & 0xff, 4);
        assert_ne!(e[1].ecx & HYPERVISOR, 0);
        assert_ne!(e[1].edx & HTT, 0);
        let topo: Vec<_> = e
            .iter()
            .filter(|e| e.function == 0xb)
            .map(|e| (e.index, e.eax, e.ebx, e.ecx >> 8, e.edx))
            .collect();
        // (sub-leaf, shift, count, level type, x2APIC id)
        assert_eq!(topo, [(0, 0, 1, 1, 3), (1, 2, 4, 2, 3), (2, 0, 0, 0, 3)]);
    }
}
