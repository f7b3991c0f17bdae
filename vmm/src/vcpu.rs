//! The vCPU run loop: one thread per vCPU, dispatching exits to the buses.

use crate::bus::Bus;
use crate::devices::{StopReason, StopSender};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a vCPU thread needs besides its fd.
pub struct VcpuContext {
    /// vCPU index.
    pub id: u8,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Where to report a stop.
    pub stop: StopSender,
    /// Set when the VM is stopping; the loop exits at its next exit.
    pub stopping: Arc<AtomicBool>,
    /// VMM process start, for the first-instruction figure.
    pub started: Instant,
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

/// Runs `vcpu` until the VM stops. Reports why on `ctx.stop`.
pub fn run(mut vcpu: VcpuFd, ctx: VcpuContext) {
    if ctx.id == 0 {
        let t: Duration = ctx.started.elapsed();
        tracing::info!(
            "first guest instruction at {:.3} ms after VMM start",
            t.as_secs_f64() * 1e3
        );
    }
    let reason = loop {
        if ctx.stopping.load(Ordering::Relaxed) {
            return;
        }
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.pio.write(u64::from(port), data);
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                ctx.pio.read(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio.read(addr, data) {
                    tracing::debug!("vcpu{}: read of unmapped MMIO {addr:#x}", ctx.id);
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !ctx.mmio.write(addr, data) {
                    tracing::debug!("vcpu{}: write to unmapped MMIO {addr:#x}", ctx.id);
                }
            }
            Ok(VcpuExit::Hlt) => break StopReason::PowerOff,
            Ok(VcpuExit::Shutdown) => break StopReason::TripleFault,
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => break StopReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => break StopReason::Reset,
                other => break StopReason::Error(format!("unknown system event {other}")),
            },
            Ok(VcpuExit::InternalError) => {
                let suberror = vcpu.get_kvm_run().__bindgen_anon_1;
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active member of the exit union.
                let internal = unsafe { suberror.internal };
                break StopReason::Error(format!(
                    "KVM internal error, suberror {} at {}",
                    internal.suberror,
                    where_is(&vcpu)
                ));
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                break StopReason::Error(format!(
                    "KVM entry failed: hardware reason {reason:#x} on cpu {cpu}"
                ));
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => {
                break StopReason::Error(format!("unexpected vCPU exit {other:?}"));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => break StopReason::Error(format!("KVM_RUN failed: {e}")),
        }
    };
    tracing::debug!("vcpu{} stops: {reason:?}", ctx.id);
    ctx.stopping.store(true, Ordering::Relaxed);
    let _ = ctx.stop.send(reason);
}

fn where_is(vcpu: &VcpuFd) -> String {
    match vcpu.get_regs() {
        Ok(r) => format!("rip {:#x}", r.rip),
        Err(_) => "unknown rip".into(),
    }
}
