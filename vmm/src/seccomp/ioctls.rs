//! The ioctl request numbers the filters allow (x86_64 `_IOC` encoding, as `<linux/kvm.h>`,
//! `<linux/if_tun.h>` and `<linux/fs.h>` define them).

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, KVMIO,
};
use std::mem::size_of;

const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

/// `_IOC(dir, type, nr, size)`.
const fn ioc(dir: u64, ty: u32, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr
}

/// `KVM_RUN`.
pub const KVM_RUN: u64 = ioc(NONE, KVMIO, 0x80, 0);
/// `KVM_GET_REGS`.
pub const KVM_GET_REGS: u64 = ioc(READ, KVMIO, 0x81, size_of::<kvm_regs>());
/// `KVM_GET_SREGS`.
pub const KVM_GET_SREGS: u64 = ioc(READ, KVMIO, 0x83, size_of::<kvm_sregs>());
/// `KVM_GET_MSRS`.
pub const KVM_GET_MSRS: u64 = ioc(READ | WRITE, KVMIO, 0x88, size_of::<kvm_msrs>());
/// `KVM_GET_LAPIC`.
pub const KVM_GET_LAPIC: u64 = ioc(READ, KVMIO, 0x8e, size_of::<kvm_lapic_state>());
/// `KVM_GET_CPUID2`.
pub const KVM_GET_CPUID2: u64 = ioc(READ | WRITE, KVMIO, 0x91, size_of::<kvm_cpuid2>());
/// `KVM_GET_MP_STATE`.
pub const KVM_GET_MP_STATE: u64 = ioc(READ, KVMIO, 0x98, size_of::<kvm_mp_state>());
/// `KVM_GET_VCPU_EVENTS`.
pub const KVM_GET_VCPU_EVENTS: u64 = ioc(READ, KVMIO, 0x9f, size_of::<kvm_vcpu_events>());
/// `KVM_GET_DEBUGREGS`.
pub const KVM_GET_DEBUGREGS: u64 = ioc(READ, KVMIO, 0xa1, size_of::<kvm_debugregs>());
/// `KVM_GET_XSAVE`.
pub const KVM_GET_XSAVE: u64 = ioc(READ, KVMIO, 0xa4, size_of::<kvm_xsave>());
/// `KVM_GET_XCRS`.
pub const KVM_GET_XCRS: u64 = ioc(READ, KVMIO, 0xa6, size_of::<kvm_xcrs>());
/// `KVM_GET_IRQCHIP`.
pub const KVM_GET_IRQCHIP: u64 = ioc(READ | WRITE, KVMIO, 0x62, size_of::<kvm_irqchip>());
/// `KVM_GET_CLOCK`.
pub const KVM_GET_CLOCK: u64 = ioc(READ, KVMIO, 0x7c, size_of::<kvm_clock_data>());
/// `KVM_GET_PIT2`.
pub const KVM_GET_PIT2: u64 = ioc(READ, KVMIO, 0x9f, size_of::<kvm_pit_state2>());
/// `KVM_CREATE_VM` (never allowed; the tests use it as a forbidden KVM ioctl).
pub const KVM_CREATE_VM: u64 = ioc(NONE, KVMIO, 0x01, 0);
/// `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: u64 = ioc(WRITE, b'T' as u32, 208, size_of::<u32>());
/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)`.
pub const BLKGETSIZE64: u64 = ioc(READ, 0x12, 114, size_of::<usize>());

/// What a vCPU thread calls on its own fd: run, and read its state for a snapshot.
pub fn vcpu() -> Vec<(u64, &'static str)> {
    vec![
        (KVM_RUN, "KVM_RUN"),
        (KVM_GET_REGS, "KVM_GET_REGS"),
        (KVM_GET_SREGS, "KVM_GET_SREGS"),
        (KVM_GET_MSRS, "KVM_GET_MSRS"),
        (KVM_GET_LAPIC, "KVM_GET_LAPIC"),
        (KVM_GET_CPUID2, "KVM_GET_CPUID2"),
        (KVM_GET_MP_STATE, "KVM_GET_MP_STATE"),
        (KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS"),
        (KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS"),
        (KVM_GET_XSAVE, "KVM_GET_XSAVE"),
        (KVM_GET_XCRS, "KVM_GET_XCRS"),
    ]
}

/// What a snapshot reads of the VM (the vCPUs are read by their own threads).
pub fn vm_snapshot() -> Vec<(u64, &'static str)> {
    vec![
        (KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP"),
        (KVM_GET_CLOCK, "KVM_GET_CLOCK"),
        (KVM_GET_PIT2, "KVM_GET_PIT2"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_headers() {
        // Values from <linux/kvm.h> / <linux/if_tun.h> / <linux/fs.h> on x86_64.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_GET_CPUID2, 0xc008_ae91);
        assert_eq!(KVM_GET_MP_STATE, 0x8004_ae98);
        assert_eq!(KVM_GET_VCPU_EVENTS, 0x8040_ae9f);
        assert_eq!(KVM_GET_DEBUGREGS, 0x8080_aea1);
        assert_eq!(KVM_GET_XSAVE, 0x9000_aea4);
        assert_eq!(KVM_GET_XCRS, 0x8188_aea6);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_GET_CLOCK, 0x8030_ae7c);
        assert_eq!(KVM_GET_PIT2, 0x8070_ae9f);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
    }
}
