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
    fn zero_vcpus_is_invalid() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "vcpus": 0}"#).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("vcpus"));
    }
}
