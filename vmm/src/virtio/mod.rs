//! virtio over MMIO (virtio 1.1, modern interface only): the device model shared by every device.
//!
//! Each device lives in its own folder with the same file set: `device.rs` (features, config
//! space, activation), the queue logic (request/packet parsing, testable over plain guest memory
//! without KVM) and `event.rs` (the worker thread that waits on the queues' ioeventfds and the
//! device's own file descriptors).

pub mod block;
pub mod mmio;
pub mod net;
#[cfg(test)]
pub mod testutil;
pub mod vsock;

use crate::memory::GuestMemoryMmap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

/// Device type ids (virtio 1.1, section 5).
pub const TYPE_NET: u32 = 1;
/// Block device.
pub const TYPE_BLOCK: u32 = 2;
/// Socket device.
pub const TYPE_VSOCK: u32 = 19;

/// The device complies with virtio 1.x (required by the modern MMIO interface).
pub const F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bit: a used buffer was added.
pub const INT_USED_RING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a queue the device cannot use.
    #[error("queue {0} is not usable")]
    BadQueue(usize),
    /// The worker thread or one of its resources could not be created.
    #[error("cannot start the device worker")]
    Worker(#[source] std::io::Error),
}

/// The interrupt line of one device, shared by its transport and its worker.
pub struct Interrupt {
    status: AtomicU32,
    generation: AtomicU32,
    irq: EventFd,
}

impl Interrupt {
    /// A line raising `irq` (an irqfd registered with KVM).
    pub fn new(irq: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            irq,
        }
    }

    /// Tells the driver that used buffers are ready.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// Tells the driver that the configuration space changed.
    pub fn signal_config_change(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.raise(INT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1) {
            tracing::warn!("virtio interrupt: {e}");
        }
    }

    /// Pending interrupt bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Configuration generation (changes whenever the config space does).
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Restores status bits and generation (snapshot restore).
    pub fn restore(&self, status: u32, generation: u32) {
        self.status.store(status, Ordering::SeqCst);
        self.generation.store(generation, Ordering::SeqCst);
    }
}

/// Lets a snapshot stop a device worker between batches and read its live queue positions.
/// Workers hold [`WorkerSync::enter`] while they touch queues or guest memory and call
/// [`WorkerSync::publish`] before releasing it.
#[derive(Clone, Default)]
pub struct WorkerSync {
    gate: Arc<RwLock<()>>,
    states: Arc<Mutex<Vec<QueueState>>>,
}

impl WorkerSync {
    /// Worker side: held while processing a batch.
    pub fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Worker side: records the queues' positions.
    pub fn publish(&self, queues: &[&Queue]) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        *states = queues.iter().map(|q| q.state()).collect();
    }

    /// Snapshot side: waits for the worker to finish its batch and keeps it out.
    pub fn quiesce(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The last published queue positions.
    pub fn states(&self) -> Vec<QueueState> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device's queues, as the driver configured them, with their notification eventfds.
    pub queues: Vec<(Queue, EventFd)>,
    /// The device's interrupt line.
    pub interrupt: Arc<Interrupt>,
    /// Quiescing and queue positions for snapshots.
    pub sync: WorkerSync,
    /// The device runs again after a snapshot restore (e.g. vsock resets its transport).
    pub restored: bool,
}

/// A virtio device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// virtio device type id.
    fn device_type(&self) -> u32;
    /// Maximum size of each queue (the number of queues is the length).
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers (include [`F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Features the driver accepted.
    fn ack_features(&mut self, features: u64);
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the driver's queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
}

/// Copies the part of `config` that `offset`/`data` cover; bytes past its end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let end = (start + data.len()).min(config.len());
    data[..end - start].copy_from_slice(&config[start..end]);
}
