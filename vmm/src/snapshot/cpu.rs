//! vCPU state in a snapshot: CPUID, registers, special registers, FPU/SSE (xsave area), XCRs,
//! debug registers, local APIC, MSRs, pending events and MP state.

use super::SnapshotError;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

/// Everything KVM holds for one vCPU.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    /// CPUID entries the vCPU ran with.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Runnable / halted / waiting for SIPI.
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE and extended state.
    pub xsave: kvm_xsave,
    /// Extended control registers (absent when KVM has none).
    pub xcrs: Option<kvm_xcrs>,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Model-specific registers that KVM could read.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts and NMIs.
    pub events: kvm_vcpu_events,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm { what, source }
}

/// MSRs this host's KVM can save, by index.
pub fn saveable_msrs(kvm: &Kvm) -> Result<Vec<u32>, SnapshotError> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(kvm_err("MSR index list"))?
        .as_slice()
        .to_vec())
}

/// Reads a vCPU's state. The vCPU must be stopped outside KVM_RUN, with pending I/O completed.
pub fn save(vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, SnapshotError> {
    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get CPUID"))?
        .as_slice()
        .to_vec();
    let mut msrs = Vec::new();
    for &index in msr_indices {
        let mut one = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .expect("one entry fits");
        if matches!(vcpu.get_msrs(&mut one), Ok(1)) {
            msrs.push(one.as_slice()[0]);
        }
    }
    Ok(VcpuState {
        cpuid,
        mp_state: vcpu.get_mp_state().map_err(kvm_err("get MP state"))?,
        regs: vcpu.get_regs().map_err(kvm_err("get registers"))?,
        sregs: vcpu.get_sregs().map_err(kvm_err("get special registers"))?,
        xsave: vcpu.get_xsave().map_err(kvm_err("get xsave"))?,
        xcrs: vcpu.get_xcrs().ok(),
        debug_regs: vcpu
            .get_debug_regs()
            .map_err(kvm_err("get debug registers"))?,
        lapic: vcpu.get_lapic().map_err(kvm_err("get local APIC"))?,
        msrs,
        events: vcpu.get_vcpu_events().map_err(kvm_err("get vCPU events"))?,
    })
}

/// Loads a saved state into a fresh vCPU (order as Firecracker: CPUID first, events last).
pub fn restore(vcpu: &VcpuFd, s: &VcpuState) -> Result<(), SnapshotError> {
    let cpuid =
        CpuId::from_entries(&s.cpuid).map_err(|_| SnapshotError::Invalid("CPUID".into()))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
    vcpu.set_mp_state(s.mp_state)
        .map_err(kvm_err("set MP state"))?;
    vcpu.set_regs(&s.regs).map_err(kvm_err("set registers"))?;
    vcpu.set_sregs(&s.sregs)
        .map_err(kvm_err("set special registers"))?;
    // SAFETY: the xsave area was produced by KVM_GET_XSAVE on a vCPU with the same CPUID.
    unsafe { vcpu.set_xsave(&s.xsave) }.map_err(kvm_err("set xsave"))?;
    if let Some(xcrs) = &s.xcrs {
        vcpu.set_xcrs(xcrs).map_err(kvm_err("set XCRs"))?;
    }
    vcpu.set_debug_regs(&s.debug_regs)
        .map_err(kvm_err("set debug registers"))?;
    vcpu.set_lapic(&s.lapic)
        .map_err(kvm_err("set local APIC"))?;
    let msrs = Msrs::from_entries(&s.msrs).map_err(|_| SnapshotError::Invalid("MSRs".into()))?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
    if set != s.msrs.len() {
        return Err(SnapshotError::Invalid(format!(
            "KVM accepted {set} of {} MSRs (index {:#x} refused)",
            s.msrs.len(),
            s.msrs[set].index
        )));
    }
    vcpu.set_vcpu_events(&s.events)
        .map_err(kvm_err("set vCPU events"))?;
    Ok(())
}
