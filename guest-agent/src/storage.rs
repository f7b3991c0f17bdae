//! Storage: MountStorage (find a virtio-blk disk by serial and mount it), UnmountStorage (sync
//! it to the disk and unmount it before the VM goes) and EnsureStorageDir (a volume's subPath
//! directory inside a mounted disk).

use std::fs;
use std::path::{Component, Path, PathBuf};
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

fn clean_mount_point(mount_point: &str) -> Result<&Path, StorageError> {
    let mp = Path::new(mount_point);
    if !mp.is_absolute() || mp.components().any(|c| c == Component::ParentDir) {
        return Err(StorageError::InvalidArgument {
            field: "mount_point",
            reason: format!("{mount_point:?} is not a clean absolute path"),
        });
    }
    Ok(mp)
}

/// How [`unmount_storage`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmountOutcome {
    /// Nothing was mounted there.
    NotMounted,
    /// Synced and unmounted.
    Clean,
    /// Synced; busy, so detached (the filesystem goes with its last user).
    Detached,
}

/// Whether `path` is a mount point (its device differs from its parent's, or it is `/`).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    match fs::metadata(parent) {
        Ok(p) => p.dev() != me.dev() || p.ino() == me.ino(),
        Err(_) => false,
    }
}

/// Syncs the filesystem mounted at `mount_point` (syncfs: its dirty data and journal are
/// written and the disk is flushed), then unmounts it, lazily (`MNT_DETACH`) when busy.
pub fn unmount_storage(mount_point: &str) -> Result<UnmountOutcome, StorageError> {
    use nix::mount::{umount2, MntFlags};
    let mp = clean_mount_point(mount_point)?;
    if !is_mount_point(mp) {
        return Ok(UnmountOutcome::NotMounted);
    }
    let io = |op: &str, e: std::io::Error| StorageError::Io {
        op: format!("{op} {mount_point}"),
        source: e,
    };
    let dir = fs::File::open(mp).map_err(|e| io("opening", e))?;
    nix::unistd::syncfs(&dir).map_err(|e| io("syncing", e.into()))?;
    drop(dir);
    match umount2(mp, MntFlags::empty()) {
        Ok(()) => Ok(UnmountOutcome::Clean),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(mp, MntFlags::MNT_DETACH).map_err(|e| io("detaching", e.into()))?;
            Ok(UnmountOutcome::Detached)
        }
        Err(nix::errno::Errno::EINVAL) => Ok(UnmountOutcome::NotMounted),
        Err(e) => Err(io("unmounting", e.into())),
    }
}

/// Creates, when missing, the directory `sub_path` inside the disk mounted at `mount_point`
/// (each new directory with the mode of the volume's root, as kubelet makes subPaths) and
/// returns its path. An existing file or directory is returned as it is; `..`, absolute paths
/// and symlinks along the way are refused.
pub fn ensure_storage_dir(mount_point: &str, sub_path: &str) -> Result<PathBuf, StorageError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mp = clean_mount_point(mount_point)?;
    let bad = |reason: String| StorageError::InvalidArgument {
        field: "sub_path",
        reason,
    };
    let sub = Path::new(sub_path);
    if sub_path.is_empty() || sub.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad(format!("{sub_path:?} is not a plain relative path")));
    }
    let io = |op: &str, p: &Path, e: std::io::Error| StorageError::Io {
        op: format!("{op} {}", p.display()),
        source: e,
    };
    let root = fs::metadata(mp).map_err(|e| io("reading", mp, e))?;
    if !root.is_dir() {
        return Err(StorageError::InvalidArgument {
            field: "mount_point",
            reason: format!("{mount_point:?} is not a directory"),
        });
    }
    let mode = root.permissions().mode() & 0o7777;
    let mut cur = mp.to_path_buf();
    let n = sub.components().count();
    for (i, c) in sub.components().enumerate() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad(format!(
                    "{sub_path:?}: {} is a symbolic link",
                    cur.display()
                )))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) if i + 1 == n => {}
            Ok(_) => {
                return Err(bad(format!(
                    "{sub_path:?}: {} is not a directory",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(mode)
                    .create(&cur)
                    .map_err(|e| io("creating", &cur, e))?;
                // The umask must not narrow the volume's mode.
                fs::set_permissions(&cur, fs::Permissions::from_mode(mode))
                    .map_err(|e| io("chmod", &cur, e))?;
            }
            Err(e) => return Err(io("reading", &cur, e)),
        }
    }
    Ok(cur)
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

    #[test]
    fn storage_dirs_are_made_with_the_roots_mode_and_refuse_escapes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("vol");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o2775)).unwrap();
        let mp = root.to_str().unwrap();
        let made = ensure_storage_dir(mp, "a/b").unwrap();
        assert_eq!(made, root.join("a/b"));
        let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o2775);
        assert_eq!(ensure_storage_dir(mp, "a/b").unwrap(), made, "idempotent");
        fs::write(root.join("f"), "x").unwrap();
        assert_eq!(ensure_storage_dir(mp, "f").unwrap(), root.join("f"));
        assert!(ensure_storage_dir(mp, "f/x").is_err());
        std::os::unix::fs::symlink("/", root.join("link")).unwrap();
        for bad in ["../x", "/etc", "", "a/../../x", "link", "link/x"] {
            let e = ensure_storage_dir(mp, bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    StorageError::InvalidArgument {
                        field: "sub_path",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        assert!(ensure_storage_dir("rel", "a").is_err());
    }

    #[test]
    fn unmounting_what_is_not_mounted_is_fine() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("not-a-mount");
        fs::create_dir(&p).unwrap();
        assert_eq!(
            unmount_storage(p.to_str().unwrap()).unwrap(),
            UnmountOutcome::NotMounted
        );
        assert_eq!(
            unmount_storage("/nonexistent/kennel").unwrap(),
            UnmountOutcome::NotMounted
        );
        assert!(unmount_storage("relative").is_err());
    }
}
