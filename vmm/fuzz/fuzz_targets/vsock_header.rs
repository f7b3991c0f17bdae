//! Fuzzes vsock packet header decoding and the checks applied to everything the guest sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::virtio::vsock::packet::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        let _ = h.check_from_guest(3, data.len().saturating_sub(44));
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }
});
