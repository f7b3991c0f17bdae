//! Receive queue logic (host → guest), independent of KVM and of the tap: puts one frame as
//! read from the tap (vnet header + Ethernet frame) into the guest's next receive chain, or with
//! mergeable buffers into as many chains as it needs ([`deliver_mergeable`]).
//!
//! Without negotiated receive offloads the header the guest sees is zero (`num_buffers` 1) and a
//! frame that needs a checksum or segmentation is dropped; with GUEST_CSUM (and TSO) the tap's
//! header, which then carries exactly those offloads, is passed on.
//!
//! Every guest value is untrusted. A chain outside guest memory or too short for even a header
//! and an Ethernet header is returned to the guest with length 0. A frame larger than the
//! chain's room (or than a whole queue of mergeable chains) is dropped (and counted), never
//! truncated, and the chains stay available for the next frame.

use super::device::NetCounters;
use super::{ETH_HLEN, VNET_HDR_LEN};
use crate::memory::GuestMemoryMmap;
use std::io::Write;
use std::sync::atomic::Ordering;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// `virtio_net_hdr.flags`: the checksum is partial (only with checksum offload, never ours).
const HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type` of a plain frame.
const GSO_NONE: u8 = 0;
/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver polls and wants no interrupt for now.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// What became of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Copied into a receive chain, which was added to the used ring.
    Delivered,
    /// The guest has no receive buffer: keep the frame and retry when the queue is notified.
    NoBuffers,
    /// Dropped: larger than the guest's buffer (the buffer stays available).
    TooBig,
    /// Dropped: shorter than an Ethernet header, or the tap asked for an offload we turned off.
    BadFrame,
}

/// Delivers `packet` (vnet header + frame, as the tap returns it) into the next receive chain;
/// `offloads` tells whether the guest accepted checksum (and segmentation) offloads.
/// Errors are used-ring writes outside guest memory: the queue is unusable.
pub fn deliver(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    packet: &[u8],
    offloads: bool,
    counters: &NetCounters,
) -> Result<RxOutcome, virtio_queue::Error> {
    if packet.len() < VNET_HDR_LEN + ETH_HLEN
        || (!offloads && (packet[0] & HDR_F_NEEDS_CSUM != 0 || packet[1] != GSO_NONE))
    {
        counters.rx_bad_frames.fetch_add(1, Ordering::Relaxed);
        return Ok(RxOutcome::BadFrame);
    }
    let frame = &packet[VNET_HDR_LEN..];
    loop {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return Ok(RxOutcome::NoBuffers);
        };
        let head = chain.head_index();
        let mut writer = match chain.writer(mem) {
            Ok(w) if w.available_bytes() >= VNET_HDR_LEN + ETH_HLEN => w,
            _ => {
                counters.bad_chains.fetch_add(1, Ordering::Relaxed);
                queue.add_used(mem, head, 0)?;
                continue;
            }
        };
        if writer.available_bytes() < VNET_HDR_LEN + frame.len() {
            queue.go_to_previous_position();
            counters.rx_too_big.fetch_add(1, Ordering::Relaxed);
            return Ok(RxOutcome::TooBig);
        }
        let hdr = header(offloads.then_some(&packet[..VNET_HDR_LEN]));
        let written = writer.write_all(&hdr).is_ok() && writer.write_all(frame).is_ok();
        if !written {
            // The regions were checked when the writer was built; this is not expected.
            counters.bad_chains.fetch_add(1, Ordering::Relaxed);
            queue.add_used(mem, head, 0)?;
            continue;
        }
        let len = (VNET_HDR_LEN + frame.len()) as u32;
        queue.add_used(mem, head, len)?;
        counters.rx_frames.fetch_add(1, Ordering::Relaxed);
        counters
            .rx_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        return Ok(RxOutcome::Delivered);
    }
}

/// Delivers `packet` with mergeable receive buffers (MRG_RXBUF): the frame is spread over as
/// many chains as it needs, the header (first chain) says how many, and all of them reach the
/// used ring at once, so the driver never sees part of a frame. Too few chains: they stay
/// available and the frame waits (`NoBuffers`); more than the queue can hold: dropped. A
/// malformed chain among them is completed with length 0 together with the ones taken before it
/// (each reads as an empty, dropped buffer) and the frame is dropped.
pub fn deliver_mergeable(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    packet: &[u8],
    offloads: bool,
    counters: &NetCounters,
) -> Result<RxOutcome, virtio_queue::Error> {
    if packet.len() < VNET_HDR_LEN + ETH_HLEN
        || (!offloads && (packet[0] & HDR_F_NEEDS_CSUM != 0 || packet[1] != GSO_NONE))
    {
        counters.rx_bad_frames.fetch_add(1, Ordering::Relaxed);
        return Ok(RxOutcome::BadFrame);
    }
    let frame = &packet[VNET_HDR_LEN..];
    let total = packet.len();
    let mut taken = Vec::new();
    let mut room = 0;
    while room < total {
        if taken.len() == usize::from(queue.size()) {
            rewind(queue, taken.len());
            counters.rx_too_big.fetch_add(1, Ordering::Relaxed);
            return Ok(RxOutcome::TooBig);
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            rewind(queue, taken.len());
            return Ok(RxOutcome::NoBuffers);
        };
        let head = chain.head_index();
        let least = if taken.is_empty() { VNET_HDR_LEN } else { 1 };
        match chain.writer(mem) {
            Ok(w) if w.available_bytes() >= least => {
                room += w.available_bytes();
                taken.push((head, w));
            }
            _ => {
                counters.bad_chains.fetch_add(1, Ordering::Relaxed);
                let mut used: Vec<(u16, u32)> = taken.iter().map(|(h, _)| (*h, 0)).collect();
                used.push((head, 0));
                publish_used(mem, queue, &used)?;
                if taken.is_empty() {
                    continue; // nothing of this frame was placed yet: try the next chain
                }
                counters.rx_bad_frames.fetch_add(1, Ordering::Relaxed);
                return Ok(RxOutcome::BadFrame);
            }
        }
    }
    let mut hdr = header(offloads.then_some(&packet[..VNET_HDR_LEN]));
    hdr[10..12].copy_from_slice(&(taken.len() as u16).to_le_bytes());
    let parts = [&hdr[..], frame];
    let (mut part, mut off) = (0, 0);
    let mut used = Vec::with_capacity(taken.len());
    for (head, w) in &mut taken {
        let mut written = 0;
        while part < parts.len() && w.available_bytes() > 0 {
            let src = &parts[part][off..];
            let n = src.len().min(w.available_bytes());
            if w.write_all(&src[..n]).is_err() {
                break; // checked regions; not expected. The frame arrives short and is dropped.
            }
            written += n;
            off += n;
            if off == parts[part].len() {
                part += 1;
                off = 0;
            }
        }
        used.push((*head, written as u32));
    }
    publish_used(mem, queue, &used)?;
    counters.rx_frames.fetch_add(1, Ordering::Relaxed);
    counters
        .rx_bytes
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    Ok(RxOutcome::Delivered)
}

fn rewind(queue: &mut Queue, n: usize) {
    for _ in 0..n {
        queue.go_to_previous_position();
    }
}

/// Writes used elements, then moves the used index once past all of them (release ordering),
/// so the driver sees a multi-buffer frame whole.
fn publish_used(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    used: &[(u16, u32)],
) -> Result<(), virtio_queue::Error> {
    let size = queue.size();
    let ring = queue.used_ring();
    let mut idx = queue.next_used();
    for &(head, len) in used {
        if head >= size {
            return Err(virtio_queue::Error::InvalidDescriptorIndex);
        }
        let addr = ring
            .checked_add(4 + u64::from(idx % size) * 8)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(addr))
            .map_err(virtio_queue::Error::GuestMemory)?;
        idx = idx.wrapping_add(1);
    }
    std::sync::atomic::fence(Ordering::Release);
    let idx_addr = ring
        .checked_add(2)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    mem.store(idx.to_le(), GuestAddress(idx_addr), Ordering::Release)
        .map_err(virtio_queue::Error::GuestMemory)?;
    queue.set_next_used(idx);
    Ok(())
}

/// Whether the driver wants an interrupt after the used index of `queue` moved from `old`: with
/// EVENT_IDX its `used_event` decides (virtio 1.1, 2.6.10); without, it sets
/// `VRING_AVAIL_F_NO_INTERRUPT` while it polls. Unreadable fields mean yes.
pub fn driver_wants_interrupt(mem: &GuestMemoryMmap, queue: &Queue, old: u16) -> bool {
    std::sync::atomic::fence(Ordering::SeqCst);
    let new = queue.next_used();
    if new == old {
        return false;
    }
    let avail = queue.avail_ring();
    if queue.event_idx_enabled() {
        let at = avail.checked_add(4 + 2 * u64::from(queue.size()));
        match at.map(|a| mem.read_obj::<u16>(GuestAddress(a))) {
            Some(Ok(event)) => {
                let event = u16::from_le(event);
                new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
            }
            _ => true,
        }
    } else {
        mem.read_obj::<u16>(GuestAddress(avail))
            .map(|flags| u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0)
            .unwrap_or(true)
    }
}

/// The header the guest sees: the tap's offload fields if the guest accepted offloads, zero
/// otherwise, and `num_buffers` 1 (no mergeable buffers).
fn header(tap: Option<&[u8]>) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    if let Some(tap) = tap {
        h[..10].copy_from_slice(&tap[..10]);
    }
    h[10..12].copy_from_slice(&1u16.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{get, memory, TestQueue, NEXT, WRITE};

    const BUF: u64 = 0x10_0000;
    const BUF2: u64 = 0x20_0000;

    fn packet(frame_len: usize) -> Vec<u8> {
        let mut p = vec![0u8; VNET_HDR_LEN];
        p[0] = 2; // DATA_VALID from the tap: not passed on
        p.extend((0..frame_len).map(|i| (i % 251) as u8));
        p
    }

    #[test]
    fn frame_lands_whole_with_a_clean_header() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(BUF, 1530, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        let p = packet(1514);
        assert_eq!(
            deliver(&mem, &mut q, &p, false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(0), (0, 1526));
        assert_eq!(get(&mem, BUF, 12), header(None).to_vec());
        assert_eq!(get(&mem, BUF + 12, 1514), p[12..].to_vec());
        assert_eq!(c.rx_frames.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn offload_header_is_passed_on_when_negotiated() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        let big = VNET_HDR_LEN + 65_000;
        tq.add(&[(BUF, 12, WRITE), (BUF2, 0x1_0000, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        let mut p = packet(65_000);
        p[..10].copy_from_slice(&[HDR_F_NEEDS_CSUM, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0]);
        assert_eq!(
            deliver(&mem, &mut q, &p, true, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(0), (0, big as u32));
        assert_eq!(
            get(&mem, BUF, 12),
            vec![HDR_F_NEEDS_CSUM, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0, 1, 0]
        );
        assert_eq!(get(&mem, BUF2 + 64_000, 1000), p[12 + 64_000..].to_vec());
    }

    #[test]
    fn frame_spans_several_descriptors() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[
            (BUF, 12, WRITE),
            (BUF2, 100, WRITE),
            (BUF2 + 4096, 1000, WRITE),
        ]);
        let mut q = tq.queue();
        let p = packet(600);
        let c = NetCounters::default();
        assert_eq!(
            deliver(&mem, &mut q, &p, false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(0).1, 612);
        assert_eq!(get(&mem, BUF2, 100), p[12..112].to_vec());
        assert_eq!(get(&mem, BUF2 + 4096, 500), p[112..].to_vec());
    }

    #[test]
    fn no_buffers_keeps_the_frame() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 16);
        let mut q = tq.queue();
        let c = NetCounters::default();
        assert_eq!(
            deliver(&mem, &mut q, &packet(60), false, &c).unwrap(),
            RxOutcome::NoBuffers
        );
        assert_eq!(tq.used_idx(), 0);
    }

    #[test]
    fn too_big_is_dropped_and_the_buffer_kept() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(BUF, 512, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        assert_eq!(
            deliver(&mem, &mut q, &packet(1000), false, &c).unwrap(),
            RxOutcome::TooBig
        );
        assert_eq!(tq.used_idx(), 0);
        assert_eq!(c.rx_too_big.load(Ordering::Relaxed), 1);
        // The same buffer takes the next, smaller frame.
        assert_eq!(
            deliver(&mem, &mut q, &packet(400), false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(0), (0, 412));
    }

    #[test]
    fn bad_frames_are_dropped_before_touching_the_queue() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(BUF, 1530, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        assert_eq!(
            deliver(&mem, &mut q, &packet(10), false, &c).unwrap(),
            RxOutcome::BadFrame
        );
        let mut gso = packet(100);
        gso[1] = 1;
        assert_eq!(
            deliver(&mem, &mut q, &gso, false, &c).unwrap(),
            RxOutcome::BadFrame
        );
        let mut csum = packet(100);
        csum[0] = HDR_F_NEEDS_CSUM;
        assert_eq!(
            deliver(&mem, &mut q, &csum, false, &c).unwrap(),
            RxOutcome::BadFrame
        );
        assert_eq!(tq.used_idx(), 0);
        assert_eq!(c.rx_bad_frames.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn malformed_chains_are_returned_empty_and_the_next_one_is_used() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        // Outside guest memory.
        tq.add(&[(0xffff_0000_0000, 1530, WRITE)]);
        // Read-only buffer: nothing to write into.
        tq.add(&[(BUF, 1530, 0)]);
        // Too short for a header and an Ethernet header.
        tq.add(&[(BUF, 20, WRITE)]);
        // Crosses the end of guest memory.
        tq.add(&[((4 << 20) - 100, 1530, WRITE)]);
        // A good one.
        let good = tq.add(&[(BUF2, 1530, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        assert_eq!(
            deliver(&mem, &mut q, &packet(100), false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used_idx(), 5);
        for i in 0..4 {
            assert_eq!(tq.used(i).1, 0);
        }
        assert_eq!(tq.used(4), (u32::from(good), 112));
        assert_eq!(c.bad_chains.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn looping_and_dangling_chains_end() {
        let mem = memory();
        let c = NetCounters::default();
        // A next index beyond the table ends the chain after 8 bytes: returned empty.
        let mut tq = TestQueue::new(&mem, 16);
        tq.raw(0, BUF, 8, WRITE | NEXT, 999);
        tq.publish(0);
        let mut q = tq.queue();
        assert_eq!(
            deliver(&mem, &mut q, &packet(100), false, &c).unwrap(),
            RxOutcome::NoBuffers
        );
        assert_eq!(tq.used(0), (0, 0));
        // A chain looping on itself is cut at the queue size (16 x 8 bytes here).
        let mut tq = TestQueue::new(&mem, 16);
        tq.raw(0, BUF, 8, WRITE | NEXT, 1);
        tq.raw(1, BUF2, 8, WRITE | NEXT, 0);
        tq.publish(0);
        let mut q = tq.queue();
        assert_eq!(
            deliver(&mem, &mut q, &packet(1400), false, &c).unwrap(),
            RxOutcome::TooBig
        );
        assert_eq!(
            deliver(&mem, &mut q, &packet(60), false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(0), (0, 72));
    }

    #[test]
    fn mergeable_frame_spans_chains_and_is_published_whole() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        for i in 0..4 {
            tq.add(&[(BUF + i * 0x1000, 1500, WRITE)]);
        }
        let mut q = tq.queue();
        let c = NetCounters::default();
        let p = packet(4000);
        assert_eq!(
            deliver_mergeable(&mem, &mut q, &p, false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used_idx(), 3);
        assert_eq!(
            (tq.used(0), tq.used(1), tq.used(2)),
            ((0, 1500), (1, 1500), (2, 1012))
        );
        let hdr = get(&mem, BUF, 12);
        assert_eq!(&hdr[10..], &[3, 0], "num_buffers");
        let mut data = get(&mem, BUF + 12, 1488);
        data.extend(get(&mem, BUF + 0x1000, 1500));
        data.extend(get(&mem, BUF + 0x2000, 1012));
        assert_eq!(data, p[12..].to_vec());
        // A small frame takes one chain, num_buffers 1.
        assert_eq!(
            deliver_mergeable(&mem, &mut q, &packet(100), false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(3), (3, 112));
        assert_eq!(&get(&mem, BUF + 0x3000 + 10, 2), &[1, 0]);
    }

    #[test]
    fn mergeable_waits_for_enough_chains() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(BUF, 1000, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        let p = packet(1500);
        assert_eq!(
            deliver_mergeable(&mem, &mut q, &p, false, &c).unwrap(),
            RxOutcome::NoBuffers
        );
        assert_eq!(tq.used_idx(), 0);
        tq.add(&[(BUF2, 1000, WRITE)]);
        assert_eq!(
            deliver_mergeable(&mem, &mut q, &p, false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!((tq.used(0), tq.used(1)), ((0, 1000), (1, 512)));
    }

    #[test]
    fn mergeable_malformed_chain_mid_frame_returns_the_chains_empty() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(0xffff_0000_0000, 1500, WRITE)]); // before the frame: skipped
        tq.add(&[(BUF, 1500, WRITE)]);
        tq.add(&[(BUF, 1500, 0)]); // read-only: malformed
        tq.add(&[(BUF2, 4000, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        assert_eq!(
            deliver_mergeable(&mem, &mut q, &packet(2500), false, &c).unwrap(),
            RxOutcome::BadFrame
        );
        assert_eq!(tq.used_idx(), 3);
        for i in 0..3 {
            assert_eq!(tq.used(i).1, 0);
        }
        assert_eq!(c.bad_chains.load(Ordering::Relaxed), 2);
        assert_eq!(
            deliver_mergeable(&mem, &mut q, &packet(2500), false, &c).unwrap(),
            RxOutcome::Delivered
        );
        assert_eq!(tq.used(3), (3, 2512));
    }

    #[test]
    fn interrupt_suppression() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(BUF, 1530, WRITE)]);
        tq.add(&[(BUF2, 1530, WRITE)]);
        let mut q = tq.queue();
        let c = NetCounters::default();
        assert!(!driver_wants_interrupt(&mem, &q, 0), "nothing used");
        deliver(&mem, &mut q, &packet(100), false, &c).unwrap();
        assert!(driver_wants_interrupt(&mem, &q, 0));
        // VRING_AVAIL_F_NO_INTERRUPT set by a polling driver.
        mem.write_obj(1u16, GuestAddress(q.avail_ring())).unwrap();
        assert!(!driver_wants_interrupt(&mem, &q, 0));
        // EVENT_IDX: interrupt only when used_event is crossed.
        q.set_event_idx(true);
        let used_event = GuestAddress(q.avail_ring() + 4 + 2 * 16);
        mem.write_obj(5u16, used_event).unwrap();
        assert!(!driver_wants_interrupt(&mem, &q, 0));
        mem.write_obj(0u16, used_event).unwrap();
        assert!(driver_wants_interrupt(&mem, &q, 0));
        deliver(&mem, &mut q, &packet(100), false, &c).unwrap();
        assert!(
            !driver_wants_interrupt(&mem, &q, 1),
            "used_event 0 was crossed before"
        );
    }
}
