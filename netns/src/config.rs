//! Node network configuration, its validation, and the names and MAC
//! addresses derived from sandbox ids.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest interface name Linux accepts (`IFNAMSIZ - 1`).
pub const MAX_LINK_NAME: usize = 15;
/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "kennel0";
/// Default directory for the IPAM state file.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kennel/netns";
/// Prefix of tap names (`ktap` + 10 hex digits of the sandbox id's hash).
pub const TAP_PREFIX: &str = "ktap";
/// Prefix of the host end of pod veths (`kveth` + 10 hex digits).
pub const VETH_PREFIX: &str = "kveth";

/// Bad node network configuration or input names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Interface names must be 1..=15 bytes.
    #[error("link name {name:?} is {len} bytes; Linux allows at most 15")]
    NameTooLong {
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Empty names, `/`, `:`, whitespace, `.` and `..` are not valid interface names.
    #[error("link name {0:?} is not a valid interface name")]
    BadName(String),
    /// The pod CIDR must leave room for the gateway and at least one pod.
    #[error("pod CIDR {0} is too small: need a prefix of /30 or shorter")]
    CidrTooSmall(Ipv4Net),
    /// The pod CIDR has bits set past its prefix.
    #[error("pod CIDR {cidr} has host bits set (did you mean {network}?)")]
    CidrHostBits {
        /// As given.
        cidr: Ipv4Net,
        /// The network it truncates to.
        network: Ipv4Net,
    },
    /// The gateway is outside the CIDR or is its network/broadcast address.
    #[error("gateway {gateway} is not a usable host address of {cidr}")]
    BadGateway {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The pod CIDR.
        cidr: Ipv4Net,
    },
    /// A sandbox id must be non-empty.
    #[error("sandbox id is empty")]
    EmptySandboxId,
}

/// How one node's pod network is set up. Plain serde data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeNetConfig {
    /// Bridge the pod links are attached to (default `kennel0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The node's pod CIDR, e.g. `10.88.0.0/24`.
    pub pod_cidr: Ipv4Net,
    /// Gateway address on the bridge; default: the CIDR's first host address.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Directory holding the IPAM state file and its lock.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Masquerade traffic from the pod CIDR to anywhere outside it (default true).
    #[serde(default = "default_true")]
    pub masquerade: bool,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_true() -> bool {
    true
}

impl NodeNetConfig {
    /// A config with defaults for everything but the CIDR and the state dir.
    pub fn new(pod_cidr: Ipv4Net, state_dir: impl Into<PathBuf>) -> Self {
        NodeNetConfig {
            bridge: default_bridge(),
            pod_cidr,
            gateway: None,
            state_dir: state_dir.into(),
            masquerade: true,
        }
    }

    /// Checks the config and returns the gateway to use.
    pub fn validate(&self) -> Result<Ipv4Addr, ConfigError> {
        validate_link_name(&self.bridge)?;
        let cidr = self.pod_cidr;
        if cidr.prefix_len() > 30 {
            return Err(ConfigError::CidrTooSmall(cidr));
        }
        if cidr.trunc() != cidr {
            return Err(ConfigError::CidrHostBits {
                cidr,
                network: cidr.trunc(),
            });
        }
        let gateway = self
            .gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(cidr.network()) + 1));
        if !cidr.contains(&gateway) || gateway == cidr.network() || gateway == cidr.broadcast() {
            return Err(ConfigError::BadGateway { gateway, cidr });
        }
        Ok(gateway)
    }
}

/// Checks that `name` is usable as a Linux interface name.
pub fn validate_link_name(name: &str) -> Result<(), ConfigError> {
    if name.len() > MAX_LINK_NAME {
        return Err(ConfigError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if name.is_empty()
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::BadName(name.to_string()));
    }
    Ok(())
}

fn digest(domain: &str, sandbox_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(sandbox_id.as_bytes());
    h.finalize().into()
}

fn hex10(bytes: &[u8]) -> String {
    bytes[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// Name of the tap for `sandbox_id` (14 bytes, stable).
pub fn tap_name(sandbox_id: &str) -> String {
    format!("{TAP_PREFIX}{}", hex10(&digest("link", sandbox_id)))
}

/// Name of the host end of the veth for `sandbox_id` (15 bytes, stable).
pub fn veth_name(sandbox_id: &str) -> String {
    format!("{VETH_PREFIX}{}", hex10(&digest("link", sandbox_id)))
}

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The pod's MAC for `sandbox_id`: stable, unicast and locally
    /// administered (first octet `xxxxxx10`).
    pub fn for_sandbox(sandbox_id: &str) -> Self {
        let d = digest("mac", sandbox_id);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&d[..6]);
        mac[0] = (mac[0] & 0xfc) | 0x02;
        MacAddr(mac)
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        let t = tap_name("sandbox-a");
        assert_eq!(t, tap_name("sandbox-a"));
        assert_ne!(t, tap_name("sandbox-b"));
        assert!(t.len() <= MAX_LINK_NAME && t.starts_with(TAP_PREFIX));
        let v = veth_name("sandbox-a");
        assert_eq!(v.len(), MAX_LINK_NAME);
        validate_link_name(&t).unwrap();
        validate_link_name(&v).unwrap();
    }

    #[test]
    fn mac_is_local_unicast_and_stable() {
        for id in ["a", "b", "0123456789abcdef", ""] {
            let m = MacAddr::for_sandbox(id);
            assert_eq!(m, MacAddr::for_sandbox(id));
            assert_eq!(m.0[0] & 0x01, 0, "unicast");
            assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
        }
        assert_ne!(MacAddr::for_sandbox("a"), MacAddr::for_sandbox("b"));
        assert_eq!(
            MacAddr([2, 0xab, 0, 1, 2, 3]).to_string(),
            "02:ab:00:01:02:03"
        );
    }

    #[test]
    fn bad_link_names() {
        let err = validate_link_name("this-name-is-too-long").unwrap_err();
        assert!(err.to_string().contains("at most 15"), "{err}");
        assert!(validate_link_name("").is_err());
        assert!(validate_link_name("a/b").is_err());
        assert!(validate_link_name("a b").is_err());
        validate_link_name("kennel0").unwrap();
        validate_link_name("exactly15bytes!").unwrap();
    }

    #[test]
    fn config_validation() {
        let cidr: Ipv4Net = "10.88.0.0/24".parse().unwrap();
        let cfg = NodeNetConfig::new(cidr, "/tmp/x");
        assert_eq!(cfg.validate().unwrap(), Ipv4Addr::new(10, 88, 0, 1));
        let mut c = cfg.clone();
        c.pod_cidr = "10.88.0.5/24".parse().unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CidrHostBits { .. })
        ));
        let mut c = cfg.clone();
        c.pod_cidr = "10.88.0.0/31".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::CidrTooSmall(_))));
        let mut c = cfg.clone();
        c.gateway = Some(Ipv4Addr::new(10, 88, 0, 255));
        assert!(matches!(c.validate(), Err(ConfigError::BadGateway { .. })));
        let mut c = cfg.clone();
        c.bridge = "sixteen-bytes-br".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NameTooLong { len: 16, .. })
        ));
    }

    #[test]
    fn config_json_rejects_unknown_fields() {
        let ok: NodeNetConfig =
            serde_json::from_str(r#"{"pod_cidr":"10.1.0.0/16","state_dir":"/tmp/s"}"#).unwrap();
        assert_eq!(ok.bridge, "kennel0");
        assert!(ok.masquerade);
        let err =
            serde_json::from_str::<NodeNetConfig>(r#"{"pod_cidr":"10.1.0.0/16","bridg":"x"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
