//! Fuzzes virtio-blk request handling over guest-built descriptor chains: the input picks up to
//! eight descriptors (address, length, flags, next) and the bytes the guest put in memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm::memory::GuestMemoryMmap;
use vmm::virtio::block::{request, Disk};

const MEM: usize = 1 << 20;

fn disk() -> &'static Mutex<Disk> {
    static DISK: OnceLock<(tempfile::NamedTempFile, Mutex<Disk>)> = OnceLock::new();
    &DISK
        .get_or_init(|| {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), vec![0x5a; 8 * 512]).unwrap();
            let d = Disk::open(f.path(), false, "fuzz").unwrap();
            (f, Mutex::new(d))
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let mock = MockSplitQueue::new(&mem, 16);
    let count = (data[0] % 8) as usize + 1;
    let mut rest = &data[1..];
    for i in 0..count {
        if rest.len() < 16 {
            return;
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
    // What the guest wrote into its buffers.
    let _ = mem.write_slice(&rest[..rest.len().min(0x8000)], GuestAddress(0x80000));
    let avail = mock.avail();
    avail.ring().ref_at(0).unwrap().store(0);
    avail.idx().store(1);
    let mut q: Queue = mock.create_queue().unwrap();
    let _ = request::process_queue(&mem, &mut q, disk());
});
