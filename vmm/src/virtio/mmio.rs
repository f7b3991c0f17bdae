//! The virtio-mmio transport (virtio 1.1 section 4.2.2, version 2 "modern" register layout).
//! Guest-written values are checked; a driver that misbehaves gets the device marked
//! DEVICE_NEEDS_RESET instead of a crash.

use super::{Activation, Interrupt, VirtioDevice, WorkerSync};
use crate::bus::BusDevice;
use crate::memory::GuestMemoryMmap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4b4e_4e4c; // "LNNK"

/// Offset of the QueueNotify register, where the ioeventfds are registered.
pub const NOTIFY_OFFSET: u64 = 0x50;
const CONFIG_OFFSET: u64 = 0x100;

/// Device status bits.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// The driver is loaded.
pub const STATUS_DRIVER: u32 = 2;
/// The driver is ready.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Feature negotiation is complete.
pub const STATUS_FEATURES_OK: u32 = 8;
/// The device hit an error it cannot recover from without a reset.
pub const STATUS_NEEDS_RESET: u32 = 0x40;
/// The driver gave up.
pub const STATUS_FAILED: u32 = 0x80;

/// One virtio device on the MMIO bus.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    notify: Vec<EventFd>,
    queue_sel: u32,
    features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
    restart_pending: bool,
    sync: WorkerSync,
}

/// One queue's registers and positions, as saved in a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSnapshot {
    /// Maximum size offered by the device.
    pub max_size: u16,
    /// Next available-ring index the device will read.
    pub next_avail: u16,
    /// Next used-ring index the device will write.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    pub event_idx_enabled: bool,
    /// Size chosen by the driver.
    pub size: u16,
    /// Queue ready.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// The transport's state in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportState {
    /// virtio device type (checked on restore).
    pub device_type: u32,
    /// Device status.
    pub status: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    /// Selected queue.
    pub queue_sel: u32,
    /// Pending interrupt bits.
    pub interrupt_status: u32,
    /// Configuration generation.
    pub generation: u32,
    /// The driver set DRIVER_OK and the device runs.
    pub activated: bool,
    /// Queues.
    pub queues: Vec<QueueSnapshot>,
}

impl MmioTransport {
    /// Wraps `device`; `irq` is the eventfd registered as its irqfd.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut notify = Vec::new();
        for &max in device.queue_max_sizes() {
            queues.push(
                Queue::new(max)
                    .map_err(|e| std::io::Error::other(format!("queue of {max}: {e:?}")))?,
            );
            notify.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irq)),
            queues,
            notify,
            queue_sel: 0,
            features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            activated: false,
            restart_pending: false,
            sync: WorkerSync::default(),
        })
    }

    /// Quiesces the device worker (held by the caller while it saves guest memory and state).
    pub fn sync(&self) -> WorkerSync {
        self.sync.clone()
    }

    /// The transport's state; call with the worker quiesced.
    pub fn state(&self) -> TransportState {
        let queues = if self.activated {
            self.sync.states().into_iter().map(Into::into).collect()
        } else {
            self.queues.iter().map(|q| q.state().into()).collect()
        };
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt.status(),
            generation: self.interrupt.generation(),
            activated: self.activated,
            queues,
        }
    }

    /// Rebuilds a transport from a snapshot and restarts its device if it was running.
    pub fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
        state: &TransportState,
    ) -> std::io::Result<Self> {
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        if state.device_type != device.device_type() {
            return Err(bad(format!(
                "snapshot has virtio device type {} where the VM has {}",
                state.device_type,
                device.device_type()
            )));
        }
        if state.queues.len() != device.queue_max_sizes().len() {
            return Err(bad(format!(
                "snapshot has {} queues for device type {}",
                state.queues.len(),
                state.device_type
            )));
        }
        let mut t = Self::new(device, mem, irq)?;
        t.status = state.status;
        t.driver_features = state.driver_features;
        t.queue_sel = state.queue_sel;
        t.interrupt
            .restore(state.interrupt_status, state.generation);
        t.queues = state
            .queues
            .iter()
            .map(|q| Queue::try_from(QueueState::from(*q)))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("snapshot queue: {e:?}")))?;
        if t.driver_features != 0 {
            t.device.ack_features(t.driver_features);
        }
        t.restart_pending = state.activated;
        Ok(t)
    }

    /// Restarts a restored device's worker. Call after the in-kernel irqchip state is loaded,
    /// or the worker's first interrupt would be lost.
    pub fn finish_restore(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.restart_pending) {
            self.start_device(true);
            if !self.activated {
                return Err(std::io::Error::other(
                    "device did not restart from the snapshot",
                ));
            }
        }
        Ok(())
    }

    /// The queue notification eventfds, for registration as KVM ioeventfds (datamatch = index).
    pub fn notify_fds(&self) -> &[EventFd] {
        &self.notify
    }

    /// The device's interrupt line.
    pub fn interrupt(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }

    /// Device status as the driver last wrote it (plus NEEDS_RESET if set by the device).
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        if self.activated {
            return None; // queue registers are frozen once the device runs
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn needs_reset(&mut self, why: &str) {
        tracing::warn!(
            "virtio device type {}: {why}; marked DEVICE_NEEDS_RESET",
            self.device.device_type()
        );
        self.status |= STATUS_NEEDS_RESET;
        self.interrupt.signal_config_change();
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            if self.activated {
                // Workers keep their queues, so a running device cannot be reset in place. The
                // guest does this when it reboots, which ends the VM anyway.
                tracing::debug!(
                    "virtio device type {}: reset of a running device ignored",
                    self.device.device_type()
                );
                self.status |= STATUS_NEEDS_RESET;
                return;
            }
            self.status = 0;
            self.driver_features = 0;
            for q in &mut self.queues {
                q.reset();
            }
            return;
        }
        // Status bits may only be added, in order (virtio 1.1, 3.1.1).
        if value & self.status != self.status {
            self.needs_reset("driver cleared status bits without a reset");
            return;
        }
        self.status = value;
        if value & STATUS_DRIVER_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & STATUS_FEATURES_OK == 0 {
            self.needs_reset("DRIVER_OK without FEATURES_OK");
            return;
        }
        self.start_device(false);
    }

    fn start_device(&mut self, restored: bool) {
        let mut queues = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() || !q.is_valid(&self.mem) {
                self.needs_reset(&format!("queue {i} not ready or outside guest memory"));
                return;
            }
            let fd = match self.notify[i].try_clone() {
                Ok(fd) => fd,
                Err(e) => {
                    self.needs_reset(&format!("queue {i} eventfd: {e}"));
                    return;
                }
            };
            match Queue::try_from(q.state()) {
                Ok(copy) => queues.push((copy, fd)),
                Err(e) => {
                    self.needs_reset(&format!("queue {i}: {e:?}"));
                    return;
                }
            }
        }
        let queue_refs: Vec<&Queue> = queues.iter().map(|(q, _)| q).collect();
        self.sync.publish(&queue_refs);
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            sync: self.sync.clone(),
            restored,
        };
        match self.device.activate(activation) {
            Ok(()) => self.activated = true,
            Err(e) => self.needs_reset(&format!("activation failed: {e}")),
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR,
            0x10 => match self.features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            0x34 => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            0x44 => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => self.interrupt.generation(),
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let driver_may_configure = self.status & STATUS_DRIVER != 0 && !self.activated;
        match offset {
            0x14 => self.features_sel = v,
            0x20 if driver_may_configure && self.status & STATUS_FEATURES_OK == 0 => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.driver_features &= !(0xffff_ffffu64 << shift);
                self.driver_features |= u64::from(v) << shift;
            }
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            0x44 => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            NOTIFY_OFFSET => {
                // Normally absorbed by the ioeventfd in KVM; this is the fallback.
                if let Some(fd) = self.notify.get(v as usize) {
                    let _ = fd.write(1);
                }
            }
            0x64 => self.interrupt.ack(v),
            0x70 => {
                if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
                    let offered = self.device.features();
                    if self.driver_features & !offered != 0 {
                        self.needs_reset("driver accepted features the device did not offer");
                        return;
                    }
                    self.device.ack_features(self.driver_features);
                }
                self.set_status(v);
            }
            0x80 => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x84 => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x90 => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x94 => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0xa0 => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            0xa4 => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            _ => tracing::debug!("virtio-mmio: ignored write {v:#x} at {offset:#x}"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected() {
            f(q);
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ActivateError, F_VERSION_1};
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use vm_memory::GuestAddress;

    struct Dummy {
        activated: Arc<AtomicBool>,
        acked: u64,
    }
    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            F_VERSION_1 | 1
        }
        fn ack_features(&mut self, f: u64) {
            self.acked = f;
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
            assert_eq!(a.queues.len(), 1);
            self.activated.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    fn transport() -> (MmioTransport, Arc<AtomicBool>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let dev = Dummy {
            activated: flag.clone(),
            acked: 0,
        };
        let t = MmioTransport::new(
            Box::new(dev),
            mem,
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        )
        .unwrap();
        (t, flag)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }
    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn negotiate(t: &mut MmioTransport, high_features: u32) {
        w(t, 0x70, STATUS_ACKNOWLEDGE);
        w(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, 0x24, 1);
        w(t, 0x20, high_features);
        w(
            t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 42);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 in the high word");
        assert_eq!(r(&mut t, 0x34), 16);
        let mut b = [0u8; 2];
        t.read(0x102, &mut b);
        assert_eq!(b, [3, 4]);
    }

    #[test]
    fn full_handshake_activates() {
        let (mut t, flag) = transport();
        negotiate(&mut t, 1);
        w(&mut t, 0x30, 0);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0x1000);
        w(&mut t, 0x90, 0x2000);
        w(&mut t, 0xa0, 0x3000);
        w(&mut t, 0x44, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert!(flag.load(Ordering::SeqCst));
        assert_eq!(t.status() & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn queue_outside_memory_needs_reset() {
        let (mut t, flag) = transport();
        negotiate(&mut t, 1);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0xffff_f000); // descriptor table beyond guest RAM
        w(&mut t, 0x84, 0x10);
        w(&mut t, 0x90, 0x2000);
        w(&mut t, 0xa0, 0x3000);
        w(&mut t, 0x44, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert!(!flag.load(Ordering::SeqCst));
        assert_ne!(t.status() & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn unoffered_features_are_refused() {
        let (mut t, _) = transport();
        negotiate(&mut t, 0xff);
        assert_ne!(t.status() & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn odd_sized_accesses_are_ignored() {
        let (mut t, _) = transport();
        let mut b = [0xaau8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(0x70, &[1, 0]);
        assert_eq!(t.status(), 0);
    }
}
