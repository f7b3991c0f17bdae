//! Disk images on the host: a sparse file of a given size holding a fresh filesystem, created
//! atomically (formatted as a temporary file in the same directory, fsynced, renamed into
//! place), so a crash leaves either no image or a whole one. Used for the images of directory
//! PersistentVolumes and by the `kennel.dev/local-disk` provisioner.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The filesystem a PersistentVolume gets when its source names none.
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// Errors creating an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The size is zero or does not fit a file.
    #[error("invalid image size {0} bytes")]
    BadSize(i64),
    /// No formatter for this filesystem.
    #[error("unsupported fsType {0:?} (supported: ext2, ext3, ext4)")]
    FsType(String),
    /// The path exists and is not a regular file.
    #[error("{0} exists and is not a regular file")]
    NotAFile(PathBuf),
    /// The formatter failed.
    #[error("mkfs.{fs_type} {path}: {message}")]
    Mkfs {
        /// The filesystem.
        fs_type: String,
        /// The temporary file being formatted.
        path: PathBuf,
        /// Its output or exit status.
        message: String,
    },
    /// A file system operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let op = op.into();
    move |source| ImageError::Io { op, source }
}

/// The formatter of a filesystem type (only the ext family: e2fsprogs is what the node has).
fn mkfs_program(fs_type: &str) -> Result<String, ImageError> {
    match fs_type {
        "ext2" | "ext3" | "ext4" => Ok(format!("mkfs.{fs_type}")),
        other => Err(ImageError::FsType(other.to_string())),
    }
}

/// Prefix of the temporary files of `path` (`.<name>.tmp-`).
fn tmp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-")
}

fn fsync_dir(d: &Path) -> Result<(), ImageError> {
    fs::File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", d.display())))
}

/// Removes temporary files of `path` left by a process that no longer runs.
fn remove_stale_tmps(dir: &Path, path: &Path) {
    let prefix = tmp_prefix(path);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid != std::process::id().to_string() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Makes `path` a `size`-byte sparse image holding an empty `fs_type` filesystem, unless it
/// already exists (then it is left as it is: its data is the volume's). Returns whether it was
/// created.
pub fn ensure(path: &Path, size: i64, fs_type: &str) -> Result<bool, ImageError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => return Ok(false),
        Ok(_) => return Err(ImageError::NotAFile(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    }
    let program = mkfs_program(fs_type)?;
    let len = u64::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or(ImageError::BadSize(size))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    remove_stale_tmps(dir, path);
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{}{}-{seq}", tmp_prefix(path), std::process::id()));
    let result = (|| {
        let f = fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        f.set_len(len)
            .map_err(io(format!("sizing {} to {len} bytes", tmp.display())))?;
        drop(f);
        let out = Command::new(&program)
            .args(["-q", "-F"])
            .arg(&tmp)
            .output()
            .map_err(io(format!("running {program}")))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(ImageError::Mkfs {
                fs_type: fs_type.to_string(),
                path: tmp.clone(),
                message: if text.is_empty() {
                    out.status.to_string()
                } else {
                    text
                },
            });
        }
        fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("syncing {}", tmp.display())))?;
        if path.exists() {
            // Another writer finished first: its image stands.
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))?;
        fsync_dir(dir)?;
        Ok(true)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes an image (absent counts as removed).
pub fn remove(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("removing {}", path.display()))(e)),
    }
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn magic(path: &Path) -> u16 {
        // The ext superblock starts at 1024; s_magic is at offset 0x38 in it.
        let b = fs::read(path).unwrap();
        u16::from_le_bytes([b[1024 + 0x38], b[1024 + 0x39]])
    }

    #[test]
    fn creates_once_sparse_and_formatted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/v.img");
        assert!(ensure(&p, 64 << 20, "ext4").unwrap());
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 64 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(m.blocks() * 512 < m.len(), "sparse");
        assert_eq!(magic(&p), 0xEF53);
        // Data written into the image survives a second ensure.
        let before = fs::read(&p).unwrap();
        assert!(!ensure(&p, 128 << 20, "ext4").unwrap());
        assert_eq!(fs::read(&p).unwrap(), before);
        // No temporary file is left.
        let names: Vec<String> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["v.img".to_string()]);
        remove(&p).unwrap();
        assert!(!p.exists());
        remove(&p).unwrap();
    }

    #[test]
    fn stale_temporary_files_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.img");
        // pid 0 never names a live process in /proc.
        let stale = d.path().join(".v.img.tmp-0-7");
        fs::write(&stale, b"half").unwrap();
        assert!(ensure(&p, 8 << 20, "ext4").unwrap());
        assert!(!stale.exists());
    }

    #[test]
    fn bad_input_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.img");
        assert!(matches!(ensure(&p, 0, "ext4"), Err(ImageError::BadSize(0))));
        let e = ensure(&p, 1 << 20, "zfs").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported fsType \"zfs\" (supported: ext2, ext3, ext4)"
        );
        assert!(matches!(
            ensure(d.path(), 1 << 20, "ext4"),
            Err(ImageError::NotAFile(_))
        ));
        assert!(!p.exists());
    }
}
