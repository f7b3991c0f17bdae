//! Legacy devices of the microVM: 8250 serial console, i8042 reset line, boot marker.

pub mod i8042;
pub mod marker;
pub mod serial;

use std::sync::mpsc::Sender;

/// Why the VM stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked for a reset (i8042 pulse or KVM system event); kennel ends the VM.
    Reset,
    /// The guest asked to power off (KVM system event).
    PowerOff,
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// A vCPU stopped with an error.
    Error(String),
    /// The host asked the VM to stop (signal or control API).
    Host(String),
    /// `--timeout` expired.
    Timeout(u64),
}

/// Where devices and vCPUs report that the VM should stop.
pub type StopSender = Sender<StopReason>;
