//! virtio-net backed by a tap device (virtio 1.1, 5.1): two queues (receive, transmit), the MAC
//! in the configuration space, and, if the driver accepts them, checksum and TSO offloads both
//! ways, mergeable receive buffers (a frame spread over several chains) and EVENT_IDX. Every
//! frame carries a 12-byte `virtio_net_hdr_v1`.
//!
//! The tap is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (header size 12, offloads set to
//! what the driver accepted), so it speaks the same header: transmit chains go to the tap as one
//! write, and each tap read is one received frame. When the guest has no receive buffers the
//! worker stops reading the tap (frames wait in the tap's queue) until the driver posts buffers
//! again.

mod device;
mod event;
pub mod rx;
pub mod tap;
pub mod tx;

pub use device::{parse_mac, Net, NetCounters, NetError, Offloads};
pub use tap::{Tap, TapError};

/// Length of `struct virtio_net_hdr_v1` (with `num_buffers`, always present in virtio 1.x).
pub const VNET_HDR_LEN: usize = 12;
/// Ethernet header length: the shortest frame we pass on.
pub const ETH_HLEN: usize = 14;
