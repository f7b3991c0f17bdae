//! VM configuration: plain serde data, from a JSON file or from flags.

use crate::profile::Profile;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Most vCPUs a VM may have (bounded by the MP table's space).
pub const MAX_VCPUS: u8 = 32;

/// Where the guest console goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Console {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// Discarded.
    None,
    /// Appended to a file.
    File(PathBuf),
}

/// Everything needed to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Uncompressed ELF `vmlinux`.
    pub kernel: PathBuf,
    /// Initramfs (newc cpio), optional.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments, after the profile's own.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Guest RAM in MiB: the pod's hard memory limit; never grown.
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u64,
    /// Number of vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest console destination.
    #[serde(default)]
    pub console: Console,
    /// Host profile (auto-detected by default).
    #[serde(default = "default_profile")]
    pub profile: Profile,
    /// virtio-blk slots, in order (the guest sees vda, vdb, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices on taps, in order (the guest sees eth0, eth1, ...).
    #[serde(default)]
    pub net: Vec<NetConfig>,
    /// virtio-vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Control API socket (JSON lines).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
}

/// One virtio-blk slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Backing file; `None` boots an empty slot to fill after boot.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The guest may not write (fixed at boot for the slot).
    #[serde(default)]
    pub read_only: bool,
    /// Device id the guest reads from /sys/block/vdX/serial (at most 20 bytes).
    #[serde(default)]
    pub serial: String,
}

impl DiskConfig {
    /// Parses `path=FILE,ro,serial=ID` (every part optional; `empty` for a slot without a file).
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let mut d = DiskConfig::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("path", v)) => d.path = Some(v.into()),
                Some(("serial", v)) => d.serial = v.into(),
                None if part == "ro" => d.read_only = true,
                None if part == "rw" => d.read_only = false,
                None if part == "empty" => d.path = None,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--disk {spec:?}: unknown part {part:?} (expected path=FILE, serial=ID, ro, rw, empty)"
                    )))
                }
            }
        }
        Ok(d)
    }
}

/// One virtio-net device, backed by a tap: by name in the VMM's network namespace, or an open
/// tap descriptor handed to the VMM by its parent (which may have opened it in another namespace),
/// or unplugged (a template's NIC: frames the guest sends are dropped, none arrive; a restore
/// plugs it into the pod's tap).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Tap interface name (opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR); empty with `fd`.
    #[serde(default)]
    pub tap: String,
    /// An inherited tap descriptor (attached with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), instead of `tap`.
    #[serde(default)]
    pub fd: Option<i32>,
    /// The guest NIC's MAC (`02:00:00:00:00:01`); a stable one is derived from the tap name if unset.
    #[serde(default)]
    pub mac: Option<String>,
    /// No backend: the NIC exists for the guest, its frames go nowhere.
    #[serde(default)]
    pub unplugged: bool,
}

impl NetConfig {
    /// An unplugged NIC with `mac`.
    pub fn unplugged(mac: &str) -> Self {
        Self {
            mac: Some(mac.into()),
            unplugged: true,
            ..Self::default()
        }
    }

    /// Parses `tap=NAME,mac=02:00:00:00:00:01`, `fd=N,mac=...` or `unplugged,mac=...` (`mac`
    /// optional).
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let mut n = NetConfig::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("tap", v)) => n.tap = v.into(),
                Some(("fd", v)) => {
                    n.fd = Some(v.parse().map_err(|_| {
                        ConfigError::Invalid(format!("--net: fd {v:?} is not a number"))
                    })?)
                }
                Some(("mac", v)) => n.mac = Some(v.into()),
                None if part == "unplugged" => n.unplugged = true,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--net {spec:?}: unknown part {part:?} (expected tap=NAME, fd=N or unplugged, mac=MAC)"
                    )))
                }
            }
        }
        n.check()?;
        Ok(n)
    }

    fn check(&self) -> Result<(), ConfigError> {
        match (self.tap.is_empty(), self.fd) {
            (true, None) if self.unplugged => {}
            _ if self.unplugged => {
                return Err(ConfigError::Invalid(format!(
                    "an unplugged net device has no tap or fd (tap {:?}, fd {:?})",
                    self.tap, self.fd
                )))
            }
            (true, None) | (false, Some(_)) => {
                return Err(ConfigError::Invalid(format!(
                "net device needs exactly one of tap=NAME, fd=N and unplugged (tap {:?}, fd {:?})",
                self.tap, self.fd
            )))
            }
            (true, Some(fd)) if fd < 0 => {
                return Err(ConfigError::Invalid(format!("net fd {fd} is negative")))
            }
            (true, Some(_)) => {}
            (false, None) => {
                if self.tap.len() > 15 || self.tap.contains(['/', '\0']) {
                    return Err(ConfigError::Invalid(format!(
                        "net tap name {:?} must be 1 to 15 bytes",
                        self.tap
                    )));
                }
            }
        }
        if let Some(mac) = &self.mac {
            crate::virtio::net::parse_mac(mac)
                .map_err(|e| ConfigError::Invalid(format!("net tap {}: {e}", self.tap)))?;
        }
        Ok(())
    }
}

/// The virtio-vsock device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Guest context id (>= 3).
    pub cid: u64,
    /// Host Unix socket (hybrid vsock: `CONNECT <port>`; guest connections go to `<socket>_<port>`).
    pub socket: PathBuf,
}

impl VsockConfig {
    /// Parses `cid=N,socket=PATH`.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let mut cid = None;
        let mut socket = None;
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("cid", v)) => {
                    cid = Some(v.parse().map_err(|_| {
                        ConfigError::Invalid(format!("--vsock: cid {v:?} is not a number"))
                    })?)
                }
                Some(("socket", v)) => socket = Some(PathBuf::from(v)),
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--vsock {spec:?}: unknown part {part:?} (expected cid=N,socket=PATH)"
                    )))
                }
            }
        }
        match (cid, socket) {
            (Some(cid), Some(socket)) => Ok(Self { cid, socket }),
            _ => Err(ConfigError::Invalid(format!(
                "--vsock {spec:?}: needs cid=N and socket=PATH"
            ))),
        }
    }
}

fn default_mem_mib() -> u64 {
    128
}
fn default_vcpus() -> u8 {
    1
}
fn default_profile() -> Profile {
    Profile::Auto
}

/// Errors reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}")]
    Read {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("invalid config {path}")]
    Parse {
        /// Path given.
        path: String,
        /// Cause (names the field).
        #[source]
        source: serde_json::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl VmConfig {
    /// Reads a JSON configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let cfg: VmConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown,
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Invalid(format!(
                "vcpus must be 1..={MAX_VCPUS}, got {}",
                self.vcpus
            )));
        }
        let slots = crate::layout::VIRTIO_SLOTS as usize;
        if self.disks.len() + self.net.len() + usize::from(self.vsock.is_some()) > slots {
            return Err(ConfigError::Invalid(format!(
                "at most {slots} virtio devices (disks + net + vsock)"
            )));
        }
        for n in &self.net {
            n.check()?;
        }
        if let Some(d) = self.disks.iter().find(|d| d.serial.len() > 20) {
            return Err(ConfigError::Invalid(format!(
                "disk serial {:?} is longer than 20 bytes",
                d.serial
            )));
        }
        if self.mem_mib < crate::memory::MIN_MEM_MIB {
            return Err(ConfigError::Invalid(format!(
                "mem_mib must be at least {}, got {}",
                crate::memory::MIN_MEM_MIB,
                self.mem_mib
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_gets_defaults() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(c.mem_mib, 128);
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.console, Console::Stdout);
        assert_eq!(c.profile, Profile::Auto);
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "memory": 5}"#).unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
    }

    #[test]
    fn console_file_form() {
        let c: VmConfig =
            serde_json::from_str(r#"{"kernel": "/k", "console": {"file": "/tmp/c"}}"#).unwrap();
        assert_eq!(c.console, Console::File("/tmp/c".into()));
    }

    #[test]
    fn disk_and_vsock_specs() {
        let d = DiskConfig::parse("path=/img,ro,serial=image-1").unwrap();
        assert_eq!(d.path.as_deref(), Some(Path::new("/img")));
        assert!(d.read_only);
        assert_eq!(d.serial, "image-1");
        assert!(DiskConfig::parse("empty,ro").unwrap().path.is_none());
        assert!(DiskConfig::parse("size=3").is_err());
        let v = VsockConfig::parse("cid=3,socket=/run/v.sock").unwrap();
        assert_eq!(v.cid, 3);
        assert!(VsockConfig::parse("cid=x,socket=/a").is_err());
        assert!(VsockConfig::parse("cid=3").is_err());
    }

    #[test]
    fn net_specs() {
        let n = NetConfig::parse("tap=ktap0,mac=02:00:00:00:00:07").unwrap();
        assert_eq!(n.tap, "ktap0");
        assert_eq!(n.mac.as_deref(), Some("02:00:00:00:00:07"));
        assert!(NetConfig::parse("tap=ktap0").unwrap().mac.is_none());
        assert_eq!(NetConfig::parse("fd=5").unwrap().fd, Some(5));
        let u = NetConfig::parse("unplugged,mac=02:00:00:00:00:08").unwrap();
        assert!(u.unplugged && u.tap.is_empty() && u.fd.is_none());
        assert_eq!(u, NetConfig::unplugged("02:00:00:00:00:08"));
        for bad in [
            "",
            "fd=x",
            "fd=-1",
            "tap=t,fd=3",
            "tap=t,unplugged",
            "fd=3,unplugged",
            "unplugged=1",
            "mac=02:00:00:00:00:07",
            "tap=a-very-long-tap-name",
            "tap=t,mac=x",
            "tap=t,mtu=9000",
        ] {
            assert!(NetConfig::parse(bad).is_err(), "{bad}");
        }
        let e = serde_json::from_str::<VmConfig>(
            r#"{"kernel": "/k", "net": [{"tap": "t", "mtu": 1}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("mtu"), "{e}");
        let c: VmConfig = serde_json::from_str(
            r#"{"kernel": "/k", "net": [{"tap": "t", "mac": "01:00:00:00:00:00"}]}"#,
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("multicast"));
    }

    #[test]
    fn zero_vcpus_is_invalid() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "vcpus": 0}"#).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("vcpus"));
    }
}
