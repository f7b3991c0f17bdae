//! Test helpers: build descriptor chains in plain guest memory (no KVM) and inspect the used ring.

use crate::memory::GuestMemoryMmap;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

/// Descriptor flag: another descriptor follows.
pub const NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const WRITE: u16 = 2;

/// 4 MiB of guest memory; queues live at 0, buffers from 1 MiB up.
pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
}

/// A split queue in `mem` that tests fill by hand.
pub struct TestQueue<'a> {
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    next_desc: u16,
}

impl<'a> TestQueue<'a> {
    /// A queue of `size` entries.
    pub fn new(mem: &'a GuestMemoryMmap, size: u16) -> Self {
        Self {
            mock: MockSplitQueue::new(mem, size),
            next_desc: 0,
        }
    }

    /// Adds a chain of (address, length, flags) descriptors (NEXT is set automatically) and
    /// makes it available. Returns its head index.
    pub fn add(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let idx = head + i as u16;
            let last = i + 1 == bufs.len();
            let flags = if last { flags } else { flags | NEXT };
            let d = Descriptor::new(addr, len, flags, idx + 1);
            self.mock
                .desc_table()
                .store(idx, RawDescriptor::from(d))
                .unwrap();
        }
        self.next_desc += bufs.len() as u16;
        self.publish(head);
        head
    }

    /// Stores a raw descriptor at `idx` (for malformed chains).
    pub fn raw(&mut self, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = Descriptor::new(addr, len, flags, next);
        self.mock
            .desc_table()
            .store(idx, RawDescriptor::from(d))
            .unwrap();
        self.next_desc = self.next_desc.max(idx + 1);
    }

    /// Makes the chain at `head` available.
    pub fn publish(&mut self, head: u16) {
        let avail = self.mock.avail();
        let i = avail.idx().load();
        avail.ring().ref_at(i as usize % 256).unwrap().store(head);
        avail.idx().store(i.wrapping_add(1));
    }

    /// A device-side queue over the same rings.
    pub fn queue(&self) -> Queue {
        self.mock.create_queue().unwrap()
    }

    /// Used element `i`: (descriptor id, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let e = self.mock.used().ring().ref_at(i as usize).unwrap().load();
        (e.id(), e.len())
    }

    /// Number of used elements.
    pub fn used_idx(&self) -> u16 {
        self.mock.used().idx().load()
    }
}

/// Writes bytes into guest memory.
pub fn put(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    mem.write_slice(bytes, GuestAddress(addr)).unwrap();
}

/// Reads bytes from guest memory.
pub fn get(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}
