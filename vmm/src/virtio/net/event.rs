//! The net worker: one thread waiting (epoll) on the two queues' ioeventfds and the tap
//! (edge-triggered, read and write readiness). It moves transmit chains to the tap and tap
//! frames into receive chains. When the guest has no receive buffer the frame in hand is kept
//! and the tap is left unread (frames wait in its queue) until the receive queue is notified;
//! when the tap cannot take a frame the chain stays queued until the tap is writable again.
//! Without a tap (an unplugged NIC) transmitted frames are consumed and dropped, and nothing is
//! received.

use super::device::{NetCounters, Offloads};
use super::rx::{self, RxOutcome};
use super::tap::Tap;
use super::tx::{self, TxStatus};
use crate::memory::GuestMemoryMmap;
use crate::virtio::{Activation, Interrupt, WorkerSync};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const RX: usize = 0;
const TX: usize = 1;
const TAP_TOKEN: u64 = 2;
/// Room for the largest frame a tap can hand over (MTU 65535 + Ethernet and VLAN headers).
const RX_BUF_LEN: usize = super::VNET_HDR_LEN + 65_535 + 18;
/// Frames moved into the guest per round, so receiving cannot starve transmitting.
const RX_BATCH: usize = 64;

struct Worker {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    notify: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    sync: WorkerSync,
    epoll: Epoll,
    tap: Option<Tap>,
    counters: Arc<NetCounters>,
    offloads: Offloads,
    /// A frame read from the tap (`rx_len` bytes of `rx_buf`) not yet in the guest.
    rx_buf: Vec<u8>,
    rx_len: usize,
    /// The tap may hold frames (edge-triggered: true until a read would block).
    tap_readable: bool,
    /// The tap refused a frame; transmit waits for write readiness.
    tx_blocked: bool,
    tx_buf: Vec<u8>,
    /// A batch limit was hit: run another round without waiting.
    more: bool,
}

pub(super) fn spawn(
    a: Activation,
    tap: Option<Tap>,
    offloads: Offloads,
    counters: Arc<NetCounters>,
) -> std::io::Result<()> {
    let (queues, notify): (Vec<Queue>, Vec<EventFd>) = a.queues.into_iter().unzip();
    let epoll = Epoll::new()?;
    for (i, fd) in notify.iter().enumerate() {
        epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, i as u64),
        )?;
    }
    if let Some(tap) = &tap {
        epoll.ctl(
            ControlOperation::Add,
            tap.as_raw_fd(),
            EpollEvent::new(
                EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
                TAP_TOKEN,
            ),
        )?;
    }
    let tap_present = tap.is_some();
    let mut worker = Worker {
        mem: a.mem,
        queues,
        notify,
        interrupt: a.interrupt,
        sync: a.sync,
        epoll,
        tap,
        counters,
        offloads,
        rx_buf: vec![0; RX_BUF_LEN],
        rx_len: 0,
        tap_readable: tap_present,
        tx_blocked: false,
        tx_buf: Vec::with_capacity(2048),
        more: true,
    };
    std::thread::Builder::new()
        .name("virtio-net".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Net) {
                tracing::error!("virtio-net: device stops: {}", e.chain());
                return;
            }
            worker.run()
        })?;
    Ok(())
}

impl Worker {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let timeout = if self.more { 0 } else { -1 };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-net: epoll: {e}; device stops");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TAP_TOKEN => {
                        let set = ev.event_set();
                        if set.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
                            self.tap_readable = true;
                        }
                        if set.intersects(EventSet::OUT | EventSet::ERROR) {
                            self.tx_blocked = false;
                        }
                    }
                    t => {
                        if let Some(fd) = self.notify.get(t as usize) {
                            let _ = fd.read();
                        }
                    }
                }
            }
            if let Err(e) = self.round() {
                tracing::error!(
                    "virtio-net: used ring outside guest memory ({e:?}); device stops ({})",
                    self.counters.summary()
                );
                return;
            }
        }
    }

    /// One round of transmit then receive, under the snapshot gate.
    fn round(&mut self) -> Result<(), virtio_queue::Error> {
        let sync = self.sync.clone();
        let _batch = sync.enter();
        let used_before = [self.queues[RX].next_used(), self.queues[TX].next_used()];
        let mut status = TxStatus::default();
        if !self.tx_blocked {
            let tap = &self.tap;
            status = tx::process_queue(
                &self.mem,
                &mut self.queues[TX],
                self.offloads.tx,
                &mut self.tx_buf,
                &self.counters,
                |buf| match tap {
                    Some(tap) => tap.write_frame(buf),
                    None => Ok(buf.len()),
                },
            )?;
            self.tx_blocked = status.blocked;
            if !status.blocked && !status.more {
                // Drained: ask for a notification on the next chain (sets avail_event with
                // EVENT_IDX); a chain that slipped in meanwhile means another round.
                status.more = self.queues[TX].enable_notification(&self.mem)?;
            }
        }
        let rx_more = self.process_rx()?;
        self.more = status.more || rx_more;
        let refs: Vec<&Queue> = self.queues.iter().collect();
        self.sync.publish(&refs);
        let mut signal = false;
        for (q, before) in [RX, TX].into_iter().zip(used_before) {
            if rx::driver_wants_interrupt(&self.mem, &self.queues[q], before) {
                signal = true;
            }
        }
        if signal {
            self.interrupt.signal_used_queue();
        }
        Ok(())
    }

    /// Moves tap frames into receive chains; true when the batch limit stopped it.
    fn process_rx(&mut self) -> Result<bool, virtio_queue::Error> {
        for _ in 0..RX_BATCH {
            if self.rx_len == 0 {
                if !self.tap_readable {
                    return Ok(false);
                }
                let Some(tap) = &self.tap else {
                    self.tap_readable = false;
                    return Ok(false);
                };
                match tap.read_frame(&mut self.rx_buf) {
                    Ok(0) => {
                        self.tap_readable = false;
                        return Ok(false);
                    }
                    Ok(n) if n < self.rx_buf.len() => self.rx_len = n,
                    Ok(n) => {
                        // Filled the whole buffer (possibly cut): not a frame to pass on.
                        tracing::debug!("virtio-net: dropped a {n}-byte read from the tap");
                        self.counters
                            .rx_bad_frames
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.tap_readable = false;
                        return Ok(false);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("virtio-net: reading tap {}: {e}", tap.name());
                        self.tap_readable = false;
                        return Ok(false);
                    }
                }
            }
            let frame = &self.rx_buf[..self.rx_len];
            let deliver = if self.offloads.mergeable {
                rx::deliver_mergeable
            } else {
                rx::deliver
            };
            match deliver(
                &self.mem,
                &mut self.queues[RX],
                frame,
                self.offloads.rx_csum,
                &self.counters,
            )? {
                RxOutcome::NoBuffers => {
                    // Ask to be notified when the driver posts buffers; if some arrived in the
                    // meantime, go on at once.
                    if self.queues[RX].enable_notification(&self.mem)? {
                        continue;
                    }
                    return Ok(false);
                }
                RxOutcome::Delivered => self.rx_len = 0,
                RxOutcome::TooBig | RxOutcome::BadFrame => {
                    tracing::debug!("virtio-net: dropped a {}-byte frame", self.rx_len);
                    self.rx_len = 0;
                }
            }
        }
        Ok(true)
    }
}
