//! Pod networking for kennel: the node side of every pod's network.
//!
//! - [`NodeNetwork::setup`] makes the bridge (default `kennel0`) with the
//!   gateway address of the node's pod CIDR, turns on forwarding and installs
//!   NAT (masquerade for traffic leaving the pod CIDR, hostPort DNAT).
//! - [`NodeNetwork::attach`] gives a sandbox a persistent tap on the bridge, a
//!   stable MAC and an address from the file-backed, locked IPAM
//!   ([`ipam::IpamStore`]); [`NodeNetwork::attach_veth`] does the same for a
//!   pod network namespace through a veth pair.
//! - [`NodeNetwork::detach`] and [`NodeNetwork::reconcile`] release everything,
//!   idempotently; reconcile also frees what a crash left behind.
//!
//! Every operation runs inside the node's network namespace ([`NetNs`]), which
//! is the host's in production and one the test made in tests.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod ipam;
mod link;
pub mod nat;
mod node;
pub mod ns;
mod sys;

pub use config::{ConfigError, MacAddr, NodeNetConfig};
pub use ipam::{IpamError, LinkKind};
pub use link::LinkError;
pub use nat::{HostPortMapping, NatError, Protocol};
pub use node::{NodeError, NodeNetwork, PodInterface, PodNetwork, ReconcileReport, Route};
pub use ns::{NetNs, NsError};

/// Opens the tap `name` (as the VMM does: `IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR`) in namespace `ns`. The returned file is the tap queue,
/// non-blocking and close-on-exec; frames carry a 10-byte `virtio_net_hdr`.
pub fn open_tap(ns: &NetNs, name: &str) -> Result<std::fs::File, LinkError> {
    ns.run(|| sys::open_tap(name))
        .map_err(|e| LinkError::Tap {
            name: name.to_string(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| LinkError::Tap {
            name: name.to_string(),
            source,
        })
}

/// Like [`open_tap`], then sets the `virtio_net_hdr` length of the queue
/// (`TUNSETVNETHDRSZ`; 12 for a virtio 1.0 device). The file is non-blocking.
pub fn open_tap_with_vnet_hdr_len(
    ns: &NetNs,
    name: &str,
    vnet_hdr_len: i32,
) -> Result<std::fs::File, LinkError> {
    let tap = open_tap(ns, name)?;
    sys::set_vnet_hdr_len(&tap, vnet_hdr_len).map_err(|source| LinkError::Tap {
        name: name.to_string(),
        source,
    })?;
    Ok(tap)
}
