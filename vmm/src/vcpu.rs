//! The vCPU run loop: one thread per vCPU, dispatching exits to the buses.

use crate::bus::Bus;
use crate::devices::{StopReason, StopSender};
use crate::snapshot::cpu::VcpuState;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Pause/resume of all vCPUs, and capture of their state while paused. A paused vCPU sits
/// outside KVM_RUN with pending I/O completed, so its state is stable.
#[derive(Default)]
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
    parked: AtomicUsize,
    threads: Mutex<Vec<libc::pthread_t>>,
}

#[derive(Default)]
struct ControlState {
    paused: bool,
    /// MSR indices to save when a capture is requested.
    capture: Option<Arc<Vec<u32>>>,
    captured: Vec<(u8, Result<VcpuState, String>)>,
}

/// Signal used to kick a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs the (empty) handler for the kick signal; KVM_RUN then returns EINTR when kicked.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; we set a handler that does nothing and no SA_RESTART,
    // so an interrupted ioctl returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl VcpuControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the calling thread as a vCPU thread.
    fn register_current(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(me);
    }

    /// Stops every vCPU outside KVM_RUN; true once all `count` are parked (false after 5 s).
    pub fn pause(&self, count: usize) -> bool {
        self.lock().paused = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.parked.load(Ordering::SeqCst) < count {
            if Instant::now() > deadline {
                return false;
            }
            for t in self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                // SAFETY: `t` is a live vCPU thread (they run until the process exits); the
                // signal has a no-op handler installed by `install_kick_handler`.
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }

    /// Whether a pause is in effect.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Saves the state of all `count` paused vCPUs (saving `msrs`), ordered by vCPU id.
    pub fn capture(&self, count: usize, msrs: Vec<u32>) -> Result<Vec<VcpuState>, String> {
        {
            let mut st = self.lock();
            if !st.paused || self.parked.load(Ordering::SeqCst) < count {
                return Err("the VM is not paused".into());
            }
            st.captured.clear();
            st.capture = Some(Arc::new(msrs));
        }
        self.changed.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut st = self.lock();
        while st.captured.len() < count {
            let (guard, _) = self
                .changed
                .wait_timeout(st, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if Instant::now() > deadline {
                st.capture = None;
                return Err("vCPUs did not report their state within 10 s".into());
            }
        }
        st.capture = None;
        let mut all = std::mem::take(&mut st.captured);
        all.sort_by_key(|(id, _)| *id);
        all.into_iter()
            .map(|(id, r)| r.map_err(|e| format!("vCPU {id}: {e}")))
            .collect()
    }

    fn park_if_paused(&self, vcpu: &mut VcpuFd, id: u8) {
        if !self.lock().paused {
            return;
        }
        // Complete the instruction of the last exit (e.g. an IN) so the saved state is whole.
        vcpu.set_kvm_immediate_exit(1);
        let _ = vcpu.run();
        vcpu.set_kvm_immediate_exit(0);
        self.parked.fetch_add(1, Ordering::SeqCst);
        let mut st = self.lock();
        let mut saved = false;
        while st.paused {
            if let (Some(msrs), false) = (st.capture.clone(), saved) {
                drop(st);
                let result = crate::snapshot::cpu::save(vcpu, &msrs).map_err(|e| e.to_string());
                st = self.lock();
                st.captured.push((id, result));
                saved = true;
                self.changed.notify_all();
                continue;
            }
            if st.capture.is_none() {
                saved = false;
            }
            let (guard, _) = self
                .changed
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
        }
        drop(st);
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

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
    /// Pause/resume.
    pub control: Arc<VcpuControl>,
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

/// Runs `vcpu` until the VM stops. Reports why on `ctx.stop`.
pub fn run(mut vcpu: VcpuFd, ctx: VcpuContext) {
    ctx.control.register_current();
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
        ctx.control.park_if_paused(&mut vcpu, ctx.id);
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
