//! Fuzzes virtio-blk request handling over guest-built descriptor chains.
#![no_main]

#[path = "chains.rs"]
mod chains;

use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use vmm::virtio::block::{request, Disk};

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
    if let Some((mem, mut queue, _)) = chains::queue_from(data) {
        let _ = request::process_queue(&mem, &mut queue, disk());
    }
});
