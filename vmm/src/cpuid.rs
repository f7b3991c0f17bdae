//! CPUID for each vCPU: KVM's supported set, with the topology filled in and, in the compatible
//! profile, the features the host's emulator lacks masked out.

use crate::profile::Profile;
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

/// Errors building CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// KVM would not report its supported CPUID.
    #[error("cannot read KVM's supported CPUID")]
    Supported(#[source] kvm_ioctls::Error),
}

// (leaf, register, bit) triples. Registers: 1 = ebx, 2 = ecx, 3 = edx.
const EBX: u8 = 1;
const ECX: u8 = 2;
const EDX: u8 = 3;
const COMPAT_MASK: &[(u32, u8, u32)] = &[
    (1, ECX, 1),           // pclmulqdq
    (1, ECX, 12),          // fma (needs xsave state)
    (1, ECX, 13),          // cx16
    (1, ECX, 17),          // pcid
    (1, ECX, 21),          // x2apic
    (1, ECX, 22),          // movbe
    (1, ECX, 23),          // popcnt
    (1, ECX, 25),          // aes
    (1, ECX, 26),          // xsave
    (1, ECX, 27),          // osxsave
    (1, ECX, 28),          // avx
    (1, ECX, 29),          // f16c
    (1, ECX, 30),          // rdrand
    (7, EBX, 0),           // fsgsbase
    (7, EBX, 3),           // bmi1
    (7, EBX, 5),           // avx2
    (7, EBX, 7),           // smep
    (7, EBX, 8),           // bmi2
    (7, EBX, 10),          // invpcid
    (7, EBX, 16),          // avx512f
    (7, EBX, 18),          // rdseed
    (7, EBX, 20),          // smap
    (7, EBX, 23),          // clflushopt
    (7, EBX, 24),          // clwb
    (7, EBX, 29),          // sha_ni
    (7, ECX, 3),           // pku
    (7, ECX, 4),           // ospke
    (7, ECX, 22),          // rdpid
    (0x8000_0001, ECX, 5), // abm (lzcnt)
];

/// KVM's supported CPUID as a template for every vCPU.
pub fn supported(kvm: &Kvm) -> Result<CpuId, CpuidError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuidError::Supported)
}

/// CPUID for vCPU `id` of `count`, under a resolved `profile`.
pub fn for_vcpu(template: &CpuId, id: u8, count: u8, profile: Profile) -> CpuId {
    let mut cpuid = template.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                // APIC id, logical processor count, hypervisor bit.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                e.ecx |= 1 << 31;
                if count > 1 {
                    e.edx |= 1 << 28;
                }
            }
            0xb => {
                e.edx = u32::from(id);
            }
            _ => {}
        }
        if profile == Profile::Compat {
            if e.function == 0xd {
                // No xsave: no xsave state components.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            for &(leaf, reg, bit) in COMPAT_MASK {
                if e.function == leaf && (leaf != 7 || e.index == 0) {
                    let r = match reg {
                        EBX => &mut e.ebx,
                        ECX => &mut e.ecx,
                        EDX => &mut e.edx,
                        _ => continue,
                    };
                    *r &= !(1 << bit);
                }
            }
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn template() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: u32::MAX,
                ebx: 0xffff_ffff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: u32::MAX,
                ecx: u32::MAX,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    #[test]
    fn compat_masks_cx16_and_popcnt_and_sets_topology() {
        let c = for_vcpu(&template(), 2, 4, Profile::Compat);
        let leaf1 = c.as_slice()[0];
        assert_eq!(leaf1.ecx & (1 << 13), 0, "cx16");
        assert_eq!(leaf1.ecx & (1 << 23), 0, "popcnt");
        assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor");
        assert_eq!(leaf1.ebx >> 24, 2);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        let leaf7 = c.as_slice()[1];
        assert_eq!(leaf7.ebx & (1 << 7), 0, "smep");
    }

    #[test]
    fn full_keeps_features() {
        let c = for_vcpu(&template(), 0, 1, Profile::Full);
        assert_ne!(c.as_slice()[0].ecx & (1 << 13), 0);
    }
}
