//! The vsock worker: one thread waiting on the queues' ioeventfds, the host listener and every
//! connection; moves packets between the guest's queues and the muxer.

use super::muxer::{Muxer, FIRST_DYNAMIC_TOKEN, LISTENER_TOKEN};
use super::packet::{Header, Packet, HEADER_LEN, MAX_PAYLOAD};
use crate::memory::GuestMemoryMmap;
use crate::virtio::{Activation, Interrupt, WorkerSync};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const RX: usize = 0;
const TX: usize = 1;
const EVQ: usize = 2;

struct Worker {
    guest_cid: u64,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    notify: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    muxer: Muxer,
    sync: WorkerSync,
    transport_reset: bool,
}

/// Event id telling the guest its transport was reset (after a snapshot restore): it drops its
/// connections and re-reads its CID.
const EVENT_TRANSPORT_RESET: u32 = 0;

pub(super) fn spawn(guest_cid: u64, a: Activation, muxer: Muxer) -> std::io::Result<()> {
    let (queues, notify): (Vec<Queue>, Vec<EventFd>) = a.queues.into_iter().unzip();
    for (i, fd) in notify.iter().enumerate() {
        muxer.epoll().ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, i as u64),
        )?;
    }
    let mut worker = Worker {
        guest_cid,
        mem: a.mem,
        queues,
        notify,
        interrupt: a.interrupt,
        muxer,
        sync: a.sync,
        transport_reset: a.restored,
    };
    std::thread::Builder::new()
        .name("virtio-vsock".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Vsock) {
                tracing::error!("virtio-vsock: device stops: {}", e.chain());
                return;
            }
            worker.run()
        })?;
    Ok(())
}

impl Worker {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        if self.transport_reset {
            let sync = self.sync.clone();
            let _batch = sync.enter();
            if self.send_transport_reset() {
                self.interrupt.signal_used_queue();
            }
            self.publish();
        }
        loop {
            // While the guest has not acknowledged a transport reset, nudge it every 100 ms.
            let timeout = if self.muxer.holding() { 100 } else { -1 };
            let n = match self.muxer.epoll().wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("vsock: epoll: {e}; device stops");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    t if t < FIRST_DYNAMIC_TOKEN && (t as usize) < self.notify.len() => {
                        let _ = self.notify[t as usize].read();
                        if t as usize == EVQ && !self.transport_reset {
                            // The guest refills its event buffer after handling the transport
                            // reset: it knows its new CID now.
                            self.muxer.hold_requests(false);
                        }
                    }
                    LISTENER_TOKEN => self.muxer.accept(),
                    token => self.muxer.stream_event(token, ev.event_set()),
                }
            }
            if n == 0 && self.muxer.holding() {
                tracing::debug!("vsock: re-raising the interrupt for the transport reset");
                self.interrupt.signal_used_queue();
                continue;
            }
            let sync = self.sync.clone();
            let _batch = sync.enter();
            let mut signal = self.process_tx();
            signal |= self.process_rx();
            if self.transport_reset {
                signal |= self.send_transport_reset();
            }
            self.publish();
            if signal {
                self.interrupt.signal_used_queue();
            }
        }
    }

    fn publish(&self) {
        let refs: Vec<&Queue> = self.queues.iter().collect();
        self.sync.publish(&refs);
    }

    /// Puts a TRANSPORT_RESET event in the guest's event queue (once it has a buffer there).
    fn send_transport_reset(&mut self) -> bool {
        let Some(chain) = self.queues[EVQ].pop_descriptor_chain(&self.mem) else {
            return false;
        };
        let head = chain.head_index();
        let written = chain
            .writer(&self.mem)
            .map(|mut w| w.write_all(&EVENT_TRANSPORT_RESET.to_le_bytes()).is_ok());
        let len = if matches!(written, Ok(true)) { 4 } else { 0 };
        let _ = self.queues[EVQ].add_used(&self.mem, head, len);
        self.transport_reset = false;
        self.muxer.hold_requests(true);
        tracing::debug!("vsock: transport reset sent to the guest");
        true
    }

    /// Takes every packet the guest queued for sending.
    fn process_tx(&mut self) -> bool {
        drain_tx(
            &self.mem,
            &mut self.queues[TX],
            &mut self.muxer,
            self.guest_cid,
        )
    }

    /// Fills the guest's receive buffers with waiting packets.
    fn process_rx(&mut self) -> bool {
        fill_rx(&self.mem, &mut self.queues[RX], &mut self.muxer)
    }
}

/// Hands every packet queued on the tx queue to the muxer; whether any buffer was used.
pub(super) fn drain_tx(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    muxer: &mut Muxer,
    guest_cid: u64,
) -> bool {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        match read_packet(mem, chain, guest_cid) {
            Ok(pkt) => muxer.handle_guest_packet(pkt),
            Err(e) => tracing::warn!("vsock: dropped guest packet: {e}"),
        }
        if queue.add_used(mem, head, 0).is_err() {
            tracing::error!("vsock: tx used ring outside guest memory");
            return used;
        }
        used = true;
    }
    used
}

/// Fills the rx queue's buffers (each chain may span any number of descriptors) with the
/// muxer's waiting packets; whether any buffer was used.
pub(super) fn fill_rx(mem: &GuestMemoryMmap, queue: &mut Queue, muxer: &mut Muxer) -> bool {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let mut writer = match chain.writer(mem) {
            Ok(w) => w,
            Err(_) => {
                let _ = queue.add_used(mem, head, 0);
                used = true;
                continue;
            }
        };
        let room = writer.available_bytes();
        if room < HEADER_LEN {
            let _ = queue.add_used(mem, head, 0);
            used = true;
            continue;
        }
        let Some(pkt) = muxer.next_for_guest((room - HEADER_LEN).min(MAX_PAYLOAD)) else {
            queue.go_to_previous_position();
            break;
        };
        if pkt.data.len() > room - HEADER_LEN {
            // A control packet never carries data; a data packet was sized to fit.
            queue.go_to_previous_position();
            muxer.requeue(pkt);
            break;
        }
        let ok = writer.write_all(&pkt.hdr.encode()).is_ok() && writer.write_all(&pkt.data).is_ok();
        let len = if ok { HEADER_LEN + pkt.data.len() } else { 0 };
        if queue.add_used(mem, head, len as u32).is_err() {
            tracing::error!("vsock: rx used ring outside guest memory");
            return used;
        }
        used = true;
    }
    used
}

/// Reads and checks one packet from a tx descriptor chain.
pub(super) fn read_packet(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    guest_cid: u64,
) -> Result<Packet, String> {
    let mut reader = chain.reader(mem).map_err(|e| format!("bad chain: {e:?}"))?;
    let available = reader.available_bytes();
    if available < HEADER_LEN {
        return Err(format!("{available} bytes, shorter than a header"));
    }
    let mut hdr = [0u8; HEADER_LEN];
    reader.read_exact(&mut hdr).map_err(|e| e.to_string())?;
    let hdr = Header::decode(&hdr).map_err(|e| e.to_string())?;
    hdr.check_from_guest(guest_cid, available - HEADER_LEN)
        .map_err(|e| e.to_string())?;
    let mut data = vec![0u8; hdr.len as usize];
    reader.read_exact(&mut data).map_err(|e| e.to_string())?;
    Ok(Packet { hdr, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{memory, put, TestQueue, WRITE};
    use crate::virtio::vsock::packet::{OP_RW, TYPE_STREAM};

    fn hdr(len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 2000,
            len,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 1 << 16,
            fwd_cnt: 0,
        }
    }

    #[test]
    fn packet_split_over_descriptors_is_read_whole() {
        let mem = memory();
        put(&mem, 0x10_0000, &hdr(5).encode());
        put(&mem, 0x11_0000, b"hello");
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(0x10_0000, HEADER_LEN as u32, 0), (0x11_0000, 5, 0)]);
        let mut q = tq.queue();
        let chain = q.pop_descriptor_chain(&mem).unwrap();
        let pkt = read_packet(&mem, chain, 3).unwrap();
        assert_eq!(pkt.data, b"hello");
    }

    #[test]
    fn bad_packets_are_refused() {
        let mem = memory();
        let cases: Vec<(Header, u32)> = vec![
            (hdr(50), 5),
            (
                {
                    let mut h = hdr(0);
                    h.src_cid = 7;
                    h
                },
                0,
            ),
        ];
        for (h, supplied) in cases {
            put(&mem, 0x10_0000, &h.encode());
            let mut tq = TestQueue::new(&mem, 16);
            tq.add(&[(0x10_0000, HEADER_LEN as u32 + supplied, 0)]);
            let mut q = tq.queue();
            let chain = q.pop_descriptor_chain(&mem).unwrap();
            assert!(read_packet(&mem, chain, 3).is_err());
        }
        // Header in a device-writable buffer only: nothing readable.
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(0x10_0000, HEADER_LEN as u32, WRITE)]);
        let mut q = tq.queue();
        let chain = q.pop_descriptor_chain(&mem).unwrap();
        assert!(read_packet(&mem, chain, 3).is_err());
    }
}
