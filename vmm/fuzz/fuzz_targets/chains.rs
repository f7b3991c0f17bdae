//! Shared by the fuzz targets: guest memory with a split queue whose descriptors come from the
//! fuzz input (address, length, flags, next), and the remaining input written where buffers live.

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm::memory::GuestMemoryMmap;

/// Guest memory size.
pub const MEM: usize = 1 << 20;

/// Builds guest memory and a queue with one available chain described by `data`; returns the
/// memory, the queue and the input bytes left after the descriptors.
pub fn queue_from(data: &[u8]) -> Option<(GuestMemoryMmap, Queue, &[u8])> {
    let (&first, mut rest) = data.split_first()?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let mock = MockSplitQueue::new(&mem, 16);
    let count = (first % 8) as usize + 1;
    for i in 0..count {
        if rest.len() < 16 {
            return None;
        }
        let addr = u64::from_le_bytes(rest[0..8].try_into().unwrap()) % (2 * MEM as u64);
        let len = u32::from_le_bytes(rest[8..12].try_into().unwrap()) % 0x10000;
        let flags = u16::from_le_bytes(rest[12..14].try_into().unwrap()) & 0x7;
        let next = u16::from_le_bytes(rest[14..16].try_into().unwrap()) % 32;
        let d = Descriptor::new(addr, len, flags, next);
        mock.desc_table()
            .store(i as u16, RawDescriptor::from(d))
            .unwrap();
        rest = &rest[16..];
    }
    let _ = mem.write_slice(&rest[..rest.len().min(0x8000)], GuestAddress(0x80000));
    let avail = mock.avail();
    avail.ring().ref_at(0).unwrap().store(0);
    avail.idx().store(1);
    let queue: Queue = mock.create_queue().unwrap();
    Some((mem, queue, rest))
}
