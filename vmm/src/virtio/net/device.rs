//! The net device: features (VERSION_1, MAC, STATUS, and checksum/TSO offloads both ways),
//! configuration space (MAC, link up, one queue pair), two queues (receive, transmit), and the
//! tap, opened when the device is created so a missing or busy tap fails the VM before boot.
//!
//! Offloads matter most where guest kernel code is slow (an emulating nested KVM): with TSO a
//! 64 KiB segment costs the guest one frame instead of 45. The tap is told at activation which
//! offloads the guest accepted, so it only hands over frames the guest can take. With mergeable
//! receive buffers a 64 KiB segment spreads over page-sized buffers; without, a guest that
//! accepts TSO posts "big" receive chains (~64 KiB each) and its TCP window grows slowly.

use super::event;
use super::tap::{Tap, TapError, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use crate::virtio::{
    read_config_bytes, ActivateError, Activation, VirtioDevice, F_VERSION_1, TYPE_NET,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_queue::QueueT;

const QUEUE_SIZE: u16 = 256;
/// The device takes frames with partial checksums (transmit).
const F_CSUM: u64 = 1 << 0;
/// The driver takes frames with partial checksums (receive).
const F_GUEST_CSUM: u64 = 1 << 1;
/// The driver takes TCPv4 segments (receive).
const F_GUEST_TSO4: u64 = 1 << 7;
/// The driver takes TCPv6 segments (receive).
const F_GUEST_TSO6: u64 = 1 << 8;
/// The device takes TCPv4 segments (transmit).
const F_HOST_TSO4: u64 = 1 << 11;
/// The device takes TCPv6 segments (transmit).
const F_HOST_TSO6: u64 = 1 << 12;
/// The driver posts mergeable receive buffers: a frame may span several.
const F_MRG_RXBUF: u64 = 1 << 15;
/// Notification suppression by ring indexes (used_event / avail_event).
const F_EVENT_IDX: u64 = 1 << 29;
/// The device has a MAC address in its configuration space.
const F_MAC: u64 = 1 << 5;
/// The configuration space has a link status.
const F_STATUS: u64 = 1 << 16;
/// Link status: up.
const STATUS_LINK_UP: u16 = 1;

/// Errors creating the net device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The MAC is not six hex bytes.
    #[error("invalid MAC address {0:?} (expected six hex bytes like 02:00:00:00:00:01)")]
    Mac(String),
    /// The MAC is a multicast address (lowest bit of the first byte set).
    #[error("MAC address {0:?} is a multicast address")]
    MulticastMac(String),
    /// The tap cannot be used.
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// Frame counters of one device (read them any time; they only grow).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered to the guest (frames without headers).
    pub rx_bytes: AtomicU64,
    /// Frames dropped because the guest's buffer was too small.
    pub rx_too_big: AtomicU64,
    /// Frames from the tap that were runts or carried an offload.
    pub rx_bad_frames: AtomicU64,
    /// Frames sent to the tap.
    pub tx_frames: AtomicU64,
    /// Bytes sent to the tap (frames without headers).
    pub tx_bytes: AtomicU64,
    /// Frames the tap refused.
    pub tx_dropped: AtomicU64,
    /// Malformed guest chains (completed with length 0 or dropped).
    pub bad_chains: AtomicU64,
}

impl NetCounters {
    /// One line for logs.
    pub fn summary(&self) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "rx {} frames {} bytes ({} too big, {} bad), tx {} frames {} bytes ({} dropped), {} bad chains",
            l(&self.rx_frames),
            l(&self.rx_bytes),
            l(&self.rx_too_big),
            l(&self.rx_bad_frames),
            l(&self.tx_frames),
            l(&self.tx_bytes),
            l(&self.tx_dropped),
            l(&self.bad_chains)
        )
    }
}

/// Parses `02:00:00:00:00:01` (unicast only).
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let part = parts.next().ok_or_else(|| NetError::Mac(s.into()))?;
        if part.len() != 2 {
            return Err(NetError::Mac(s.into()));
        }
        *b = u8::from_str_radix(part, 16).map_err(|_| NetError::Mac(s.into()))?;
    }
    if parts.next().is_some() {
        return Err(NetError::Mac(s.into()));
    }
    if mac[0] & 1 != 0 {
        return Err(NetError::MulticastMac(s.into()));
    }
    Ok(mac)
}

/// A stable, locally administered MAC for a tap without a configured one (FNV-1a of the name).
pub fn default_mac(tap: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in tap.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let [a, b, c, _] = h.to_be_bytes();
    [0x02, 0x4b, 0x4e, a, b, c]
}

/// The offloads the driver accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Transmit headers may ask for checksums or segmentation (CSUM).
    pub tx: bool,
    /// Receive headers may carry partial checksums (GUEST_CSUM).
    pub rx_csum: bool,
    /// Receive frames may be TCPv4 segments (GUEST_TSO4).
    pub rx_tso4: bool,
    /// Receive frames may be TCPv6 segments (GUEST_TSO6).
    pub rx_tso6: bool,
    /// Receive frames may span several buffers (MRG_RXBUF).
    pub mergeable: bool,
}

impl Offloads {
    /// From the accepted feature bits (TSO without the checksum feature it depends on is ignored).
    pub fn from_acked(acked: u64) -> Self {
        let rx_csum = acked & F_GUEST_CSUM != 0;
        Self {
            tx: acked & F_CSUM != 0,
            rx_csum,
            rx_tso4: rx_csum && acked & F_GUEST_TSO4 != 0,
            rx_tso6: rx_csum && acked & F_GUEST_TSO6 != 0,
            mergeable: acked & F_MRG_RXBUF != 0,
        }
    }

    /// The matching `TUNSETOFFLOAD` flags.
    pub fn tap_flags(&self) -> u32 {
        let mut f = 0;
        if self.rx_csum {
            f |= TUN_F_CSUM;
        }
        if self.rx_tso4 {
            f |= TUN_F_TSO4;
        }
        if self.rx_tso6 {
            f |= TUN_F_TSO6;
        }
        f
    }
}

/// Where the device's frames go.
enum Backend {
    Tap(Tap),
    /// No tap: transmitted frames are dropped (and counted), nothing is received.
    Unplugged,
}

/// The virtio-net device.
pub struct Net {
    mac: [u8; 6],
    /// Taken by `activate`.
    backend: Option<Backend>,
    counters: Arc<NetCounters>,
    acked: u64,
}

impl Net {
    /// A device on `tap` whose guest NIC has `mac`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Self {
            mac,
            backend: Some(Backend::Tap(tap)),
            counters: Arc::new(NetCounters::default()),
            acked: 0,
        }
    }

    /// Opens the tap `name` (in the current network namespace); without `mac`, a stable one is
    /// derived from the tap's name.
    pub fn open(name: &str, mac: Option<&str>) -> Result<Self, NetError> {
        let mac = match mac {
            Some(m) => parse_mac(m)?,
            None => default_mac(name),
        };
        Ok(Self::new(Tap::open(name)?, mac))
    }

    /// A device without a tap (a template's NIC, plugged into a pod's tap on restore).
    pub fn unplugged(mac: [u8; 6]) -> Self {
        Self {
            mac,
            backend: Some(Backend::Unplugged),
            counters: Arc::new(NetCounters::default()),
            acked: 0,
        }
    }

    /// The device a configuration describes: a tap by name, an inherited tap descriptor, or
    /// unplugged.
    pub fn from_config(config: &crate::config::NetConfig) -> Result<Self, NetError> {
        if config.unplugged {
            let mac = match &config.mac {
                Some(m) => parse_mac(m)?,
                None => default_mac("unplugged"),
            };
            return Ok(Self::unplugged(mac));
        }
        let Some(fd) = config.fd else {
            return Self::open(&config.tap, config.mac.as_deref());
        };
        let tap = Tap::from_raw_fd(fd)?;
        let mac = match &config.mac {
            Some(m) => parse_mac(m)?,
            None => default_mac(tap.name()),
        };
        Ok(Self::new(tap, mac))
    }

    /// The guest NIC's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device's frame counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    fn config(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&STATUS_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        c
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1
            | F_MAC
            | F_STATUS
            | F_CSUM
            | F_GUEST_CSUM
            | F_GUEST_TSO4
            | F_GUEST_TSO6
            | F_HOST_TSO4
            | F_HOST_TSO6
            | F_EVENT_IDX
            | F_MRG_RXBUF
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6], le16 status, le16 max_virtqueue_pairs.
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(&mut self, mut a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != 2 {
            return Err(ActivateError::BadQueue(a.queues.len()));
        }
        let backend = self
            .backend
            .take()
            .ok_or(ActivateError::Worker(std::io::Error::other(
                "virtio-net already active",
            )))?;
        for (q, _) in &mut a.queues {
            q.set_event_idx(self.acked & F_EVENT_IDX != 0);
        }
        let offloads = Offloads::from_acked(self.acked);
        let tap = match backend {
            Backend::Tap(tap) => {
                tap.set_offload(offloads.tap_flags())
                    .map_err(|e| ActivateError::Worker(std::io::Error::other(e.to_string())))?;
                Some(tap)
            }
            Backend::Unplugged => None,
        };
        event::spawn(a, tap, offloads, self.counters.clone()).map_err(ActivateError::Worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:FF:00:01").unwrap(),
            [2, 0, 0xa, 0xff, 0, 1]
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:00",
        ] {
            assert!(matches!(parse_mac(bad), Err(NetError::Mac(_))), "{bad}");
        }
        assert!(matches!(
            parse_mac("01:00:5e:00:00:01"),
            Err(NetError::MulticastMac(_))
        ));
        let m = default_mac("ktap0123456789");
        assert_eq!(m, default_mac("ktap0123456789"));
        assert_ne!(m, default_mac("ktap0123456788"));
        assert_eq!(m[0] & 3, 2, "locally administered unicast");
    }

    #[test]
    fn offloads_follow_the_accepted_features() {
        assert_eq!(Offloads::from_acked(F_VERSION_1).tap_flags(), 0);
        let all = Offloads::from_acked(u64::MAX);
        assert!(all.tx);
        assert_eq!(all.tap_flags(), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
        // TSO without the receive checksum feature is not usable.
        let o = Offloads::from_acked(F_GUEST_TSO4 | F_HOST_TSO4);
        assert_eq!(o.tap_flags(), 0);
        assert!(!o.tx);
    }
}
