//! Fuzzes virtio-net: transmit chains built by the guest, and received frames (from the tap)
//! delivered into guest-built receive chains, with and without mergeable buffers.
#![no_main]

#[path = "chains.rs"]
mod chains;

use libfuzzer_sys::fuzz_target;
use vmm::virtio::net::{rx, tx, NetCounters};

fuzz_target!(|data: &[u8]| {
    let counters = NetCounters::default();
    if let Some((mem, mut queue, rest)) = chains::queue_from(data) {
        let mut buf = Vec::new();
        let _ = tx::process_queue(&mem, &mut queue, true, &mut buf, &counters, |b| Ok(b.len()));
        let packet = rest.to_vec();
        if let Some((mem, mut queue, _)) = chains::queue_from(data) {
            let _ = rx::deliver(&mem, &mut queue, &packet, data.len() % 2 == 0, &counters);
        }
        if let Some((mem, mut queue, _)) = chains::queue_from(data) {
            let _ = rx::deliver_mergeable(&mem, &mut queue, &packet, true, &counters);
        }
    }
});
