//! Transmit queue logic (guest → host), independent of KVM and of the tap: reads each chain's
//! `virtio_net_hdr_v1` + frame and hands one buffer per frame to a sender (the tap).
//!
//! Every guest value is untrusted: a chain outside guest memory, shorter than a header and an
//! Ethernet header, or longer than [`MAX_FRAME`] is completed and dropped (counted). Without
//! negotiated transmit offloads (CSUM, HOST_TSO4/6) the guest's header is replaced by a zeroed
//! one, so none can be requested; with them it is passed on and the tap's kernel side checks it
//! as it checks any other writer's.

use super::device::NetCounters;
use super::{ETH_HLEN, VNET_HDR_LEN};
use crate::memory::GuestMemoryMmap;
use std::io::{ErrorKind, Read};
use std::sync::atomic::Ordering;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

/// Largest frame (without the vnet header) taken from the guest: a 64 KiB IP packet (TSO) with
/// Ethernet and VLAN headers.
pub const MAX_FRAME: usize = 65_535 + 18;
/// Chains handled per call, so a busy transmit queue cannot starve receiving.
pub const BATCH: usize = 64;

/// Why a transmit chain was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// A buffer lies outside guest memory.
    #[error("transmit chain outside guest memory")]
    Chain,
    /// Too short for a header and an Ethernet header.
    #[error("transmit chain of {0} bytes is shorter than a header and an Ethernet header")]
    Short(usize),
    /// Longer than [`MAX_FRAME`] plus the header.
    #[error("transmit chain of {0} bytes is longer than a frame may be")]
    TooBig(usize),
}

/// What one call of [`process_queue`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStatus {
    /// Chains were added to the used ring.
    pub used: bool,
    /// The sender would block: the current chain stays queued until it can take more.
    pub blocked: bool,
    /// The batch limit was reached with chains still waiting.
    pub more: bool,
}

/// Reads one chain into `buf` as the tap takes it: the vnet header (zeroed unless `offloads`),
/// then the frame.
pub fn read_frame(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    offloads: bool,
    buf: &mut Vec<u8>,
) -> Result<(), TxError> {
    let mut reader = chain.reader(mem).map_err(|_| TxError::Chain)?;
    let len = reader.available_bytes();
    if len < VNET_HDR_LEN + ETH_HLEN {
        return Err(TxError::Short(len));
    }
    if len > VNET_HDR_LEN + MAX_FRAME {
        return Err(TxError::TooBig(len));
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).map_err(|_| TxError::Chain)?;
    if !offloads {
        buf[..VNET_HDR_LEN].fill(0);
    }
    buf[10..VNET_HDR_LEN].fill(0); // num_buffers: receive side only
    Ok(())
}

/// Sends every available chain (up to [`BATCH`]) through `send`, which writes one whole buffer;
/// `offloads` tells whether the guest negotiated transmit offloads.
/// Errors are used-ring writes outside guest memory: the queue is unusable.
pub fn process_queue(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    offloads: bool,
    buf: &mut Vec<u8>,
    counters: &NetCounters,
    mut send: impl FnMut(&[u8]) -> std::io::Result<usize>,
) -> Result<TxStatus, virtio_queue::Error> {
    let mut status = TxStatus::default();
    for _ in 0..BATCH {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return Ok(status);
        };
        let head = chain.head_index();
        match read_frame(mem, chain, offloads, buf) {
            Ok(()) => match send(buf) {
                Ok(n) if n == buf.len() => {
                    counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                    counters
                        .tx_bytes
                        .fetch_add((n - VNET_HDR_LEN) as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    queue.go_to_previous_position();
                    status.blocked = true;
                    return Ok(status);
                }
                Ok(_) | Err(_) => {
                    counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) => {
                tracing::debug!("virtio-net: {e}; dropped");
                counters.bad_chains.fetch_add(1, Ordering::Relaxed);
            }
        }
        queue.add_used(mem, head, 0)?;
        status.used = true;
    }
    status.more = true;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{memory, put, TestQueue, NEXT, WRITE};

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x11_0000;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    fn run(
        mem: &GuestMemoryMmap,
        tq: &TestQueue,
        mut send: impl FnMut(&[u8]) -> std::io::Result<usize>,
    ) -> (TxStatus, NetCounters, Queue) {
        let mut q = tq.queue();
        let c = NetCounters::default();
        let mut buf = Vec::new();
        let s = process_queue(mem, &mut q, false, &mut buf, &c, &mut send).unwrap();
        (s, c, q)
    }

    #[test]
    fn header_and_frame_in_separate_or_one_descriptor() {
        let mem = memory();
        let f = frame(1514);
        // The guest's header asks for an offload: it is zeroed on the way out.
        put(&mem, HDR, &[1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        put(&mem, DATA, &f);
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(HDR, 12, 0), (DATA, 1514, 0)]);
        put(&mem, 0x20_0000, &[0u8; 12]);
        put(&mem, 0x20_000c, &f[..60]);
        tq.add(&[(0x20_0000, 72, 0)]);
        let mut sent = Vec::new();
        let (s, c, _) = run(&mem, &tq, |b| {
            sent.push(b.to_vec());
            Ok(b.len())
        });
        assert!(s.used && !s.blocked && !s.more);
        assert_eq!(sent.len(), 2);
        assert_eq!(&sent[0][..12], &[0u8; 12]);
        assert_eq!(&sent[0][12..], &f[..]);
        assert_eq!(&sent[1][12..], &f[..60]);
        assert_eq!(tq.used(0), (0, 0));
        assert_eq!(tq.used(1), (2, 0));
        assert_eq!(c.tx_frames.load(Ordering::Relaxed), 2);
        assert_eq!(c.tx_bytes.load(Ordering::Relaxed), 1574);
    }

    #[test]
    fn offload_header_is_kept_when_negotiated() {
        let mem = memory();
        let hdr = [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 7, 7];
        put(&mem, HDR, &hdr);
        put(&mem, DATA, &frame(20_000));
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(HDR, 12, 0), (DATA, 20_000, 0)]);
        let mut q = tq.queue();
        let mut sent = Vec::new();
        let c = NetCounters::default();
        process_queue(&mem, &mut q, true, &mut Vec::new(), &c, |b| {
            sent = b.to_vec();
            Ok(b.len())
        })
        .unwrap();
        assert_eq!(&sent[..12], &[1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0]);
        assert_eq!(sent.len(), 20_012);
    }

    #[test]
    fn a_busy_sender_keeps_the_chain() {
        let mem = memory();
        put(&mem, HDR, &[0; 12]);
        put(&mem, DATA, &frame(100));
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(HDR, 12, 0), (DATA, 100, 0)]);
        let (s, _, mut q) = run(&mem, &tq, |_| Err(ErrorKind::WouldBlock.into()));
        assert!(s.blocked && !s.used);
        assert_eq!(tq.used_idx(), 0);
        // Retried later, the same chain goes out.
        let c = NetCounters::default();
        let mut n = 0;
        let s = process_queue(&mem, &mut q, false, &mut Vec::new(), &c, |b| {
            n += 1;
            Ok(b.len())
        })
        .unwrap();
        assert!(s.used);
        assert_eq!((n, tq.used_idx()), (1, 1));
    }

    #[test]
    fn a_failing_sender_drops_and_completes() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(HDR, 12, 0), (DATA, 100, 0)]);
        let (s, c, _) = run(&mem, &tq, |_| Err(std::io::Error::other("link down")));
        assert!(s.used);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(c.tx_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn malformed_chains_are_completed_and_never_sent() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        // Outside guest memory.
        tq.add(&[(HDR, 12, 0), (0xffff_0000_0000, 100, 0)]);
        // Only device-writable buffers: nothing to read.
        tq.add(&[(HDR, 12, WRITE), (DATA, 100, WRITE)]);
        // Header without a full Ethernet header.
        tq.add(&[(HDR, 12, 0), (DATA, 13, 0)]);
        // Longer than any frame.
        tq.add(&[(HDR, 12, 0), (DATA, 0x1_0000, 0), (DATA, 0x1_0000, 0)]);
        // Crosses the end of guest memory.
        tq.add(&[((4 << 20) - 50, 100, 0)]);
        let (s, c, _) = run(&mem, &tq, |_| panic!("nothing may be sent"));
        assert!(s.used);
        assert_eq!(tq.used_idx(), 5);
        assert_eq!(c.bad_chains.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn looping_chain_is_bounded() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 16);
        tq.raw(0, HDR, 12, NEXT, 1);
        tq.raw(1, DATA, 100, NEXT, 0);
        tq.publish(0);
        let mut lens = Vec::new();
        let (s, _, _) = run(&mem, &tq, |b| {
            lens.push(b.len());
            Ok(b.len())
        });
        assert!(s.used);
        // At most queue-size descriptors are followed.
        assert!(lens.iter().all(|l| *l <= 16 * 100), "{lens:?}");
    }

    #[test]
    fn batches_are_bounded() {
        let mem = memory();
        let mut tq = TestQueue::new(&mem, 256);
        for _ in 0..BATCH + 10 {
            tq.add(&[(HDR, 72, 0)]);
        }
        let mut q = tq.queue();
        let c = NetCounters::default();
        let mut buf = Vec::new();
        let s = process_queue(&mem, &mut q, false, &mut buf, &c, |b| Ok(b.len())).unwrap();
        assert!(s.used && s.more);
        assert_eq!(tq.used_idx() as usize, BATCH);
        let s = process_queue(&mem, &mut q, false, &mut buf, &c, |b| Ok(b.len())).unwrap();
        assert!(s.used && !s.more);
        assert_eq!(tq.used_idx() as usize, BATCH + 10);
    }
}
