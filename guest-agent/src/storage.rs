//! MountStorage: find a virtio-blk disk by serial and mount it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, MsFlags};

/// Errors mounting storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No disk carries the serial.
    #[error("no block device with serial {0:?}")]
    NotFound(String),
    /// Creating the mount point or mounting failed.
    #[error("{op}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where block devices are found (overridable for host tests).
#[derive(Debug, Clone)]
pub struct BlockPaths {
    /// /sys/block.
    pub sys_block: PathBuf,
    /// /dev.
    pub dev: PathBuf,
}

/// Finds the device node whose `/sys/block/<name>/serial` equals `serial`.
pub fn find_by_serial(paths: &BlockPaths, serial: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(&paths.sys_block).ok()?;
    for e in entries.flatten() {
        let s = fs::read_to_string(e.path().join("serial")).unwrap_or_default();
        if s.trim_end_matches(['\n', '\0']).trim() == serial {
            return Some(paths.dev.join(e.file_name()));
        }
    }
    None
}

/// Mounts the disk with `serial` at `mount_point`; returns the device path. Waits up to
/// `wait` for a disk that is being hot-attached to appear.
pub async fn mount_storage(
    paths: &BlockPaths,
    serial: &str,
    mount_point: &str,
    fstype: &str,
    readonly: bool,
    options: &str,
    wait: Duration,
) -> Result<PathBuf, StorageError> {
    let bad = |field, reason: String| StorageError::InvalidArgument { field, reason };
    if serial.is_empty() {
        return Err(bad("serial", "empty".into()));
    }
    let mp = Path::new(mount_point);
    if !mp.is_absolute()
        || mp
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(bad(
            "mount_point",
            format!("{mount_point:?} is not a clean absolute path"),
        ));
    }
    if fstype.is_empty() || fstype.contains(['\0', ',', ' ']) {
        return Err(bad(
            "fstype",
            format!("{fstype:?} is not a filesystem type"),
        ));
    }
    if options.contains('\0') {
        return Err(bad("options", "contains a NUL byte".into()));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let dev = loop {
        if let Some(d) = find_by_serial(paths, serial) {
            if d.exists() {
                break d;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StorageError::NotFound(serial.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    fs::create_dir_all(mp).map_err(|source| StorageError::Io {
        op: format!("creating {mount_point}"),
        source,
    })?;
    let mut flags = MsFlags::empty();
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = (!options.is_empty()).then_some(options);
    mount(Some(&dev), mp, Some(fstype), flags, data).map_err(|e| StorageError::Io {
        op: format!("mounting {} ({fstype}) on {mount_point}", dev.display()),
        source: e.into(),
    })?;
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_disk_by_serial() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("block");
        for (name, serial) in [("vda", "root\n"), ("vdb", "img-abc\0\0")] {
            fs::create_dir_all(sys.join(name)).unwrap();
            fs::write(sys.join(name).join("serial"), serial).unwrap();
        }
        let paths = BlockPaths {
            sys_block: sys,
            dev: "/dev".into(),
        };
        assert_eq!(find_by_serial(&paths, "img-abc"), Some("/dev/vdb".into()));
        assert_eq!(find_by_serial(&paths, "missing"), None);
    }
}
