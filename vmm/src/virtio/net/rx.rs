//! Receive queue logic (host → guest), independent of KVM and of the tap: puts one frame as
//! read from the tap (vnet header + Ethernet frame) into the guest's next receive chain.
//!
//! Without negotiated receive offloads the header the guest sees is zero (`num_buffers` 1) and a
//! frame that needs a checksum or segmentation is dropped; with GUEST_CSUM (and TSO) the tap's
//! header, which then carries exactly those offloads, is passed on.
//!
//! Every guest value is untrusted. A chain outside guest memory or too short for even a header
//! and an Ethernet header is returned to the guest with length 0. A frame larger than the
//! chain's room is dropped (and counted), never truncated, and the chain stays available for
//! the next frame.

use super::device::NetCounters;
use super::{ETH_HLEN, VNET_HDR_LEN};
use crate::memory::GuestMemoryMmap;
use std::io::Write;
use std::sync::atomic::Ordering;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

/// `virtio_net_hdr.flags`: the checksum is partial (only with checksum offload, never ours).
const HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type` of a plain frame.
const GSO_NONE: u8 = 0;

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
}
