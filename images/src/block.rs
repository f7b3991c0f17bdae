//! Block images: each image flattened once into a read-only ext4 file (`mkfs.ext4 -d`), cached by
//! image id under `blocks/` and shared by every pod VM that uses the image.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::store::{ImageRecord, Store, StoreError};
use crate::unpack::{UnpackError, UnpackStats};

/// ext4 block size used.
const BLOCK: u64 = 4096;

/// Errors building block images.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Filesystem error.
    #[error("{op} {path:?}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4` missing (install e2fsprogs).
    #[error("cannot run mkfs.ext4 (is e2fsprogs installed?)")]
    NoMkfs(#[source] io::Error),
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    /// Unpacking the image failed.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlockError + 'a {
    move |source| BlockError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A read-only block image of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockImage {
    /// The ext4 file.
    pub path: PathBuf,
    /// Its size in bytes (apparent).
    pub size: u64,
    /// True when this call built it (false: it was cached).
    pub built: bool,
    /// What unpacking did (zero when cached).
    pub unpack: UnpackStats,
}

/// Bytes and inodes a tree needs: `(data bytes rounded to blocks, inode count)`.
pub fn tree_usage(dir: &Path) -> Result<(u64, u64), BlockError> {
    let (mut bytes, mut inodes) = (0u64, 1u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err("list", &d))? {
            let e = e.map_err(io_err("list", &d))?;
            let md = e
                .path()
                .symlink_metadata()
                .map_err(io_err("stat", &e.path()))?;
            inodes += 1;
            if md.is_dir() {
                bytes += BLOCK;
                stack.push(e.path());
            } else if md.is_file() {
                // hard links are counted per link: a slight overestimate is fine
                bytes += md.len().div_ceil(BLOCK) * BLOCK;
            } else if md.file_type().is_symlink() && md.len() >= 60 {
                bytes += BLOCK;
            }
        }
    }
    Ok((bytes, inodes))
}

/// Makes an ext4 image of `src` at `out`, sized from the content plus margin. Returns its size.
pub fn build_ext4(src: &Path, out: &Path, label: &str) -> Result<u64, BlockError> {
    let (bytes, inodes) = tree_usage(src)?;
    let inodes = inodes + inodes / 4 + 64;
    // data + 10% + inode tables (256 B each) + 4 MiB metadata margin, at least 8 MiB
    let mut size = (bytes + bytes / 10 + inodes * 256 + (4 << 20))
        .max(8 << 20)
        .div_ceil(BLOCK)
        * BLOCK;
    for attempt in 0..4 {
        let _ = fs::remove_file(out);
        let f = fs::File::create(out).map_err(io_err("create", out))?;
        f.set_len(size).map_err(io_err("size", out))?;
        drop(f);
        let res = Command::new("mkfs.ext4")
            .args([
                "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0", "-L", label,
            ])
            .args(["-O", "^has_journal,^resize_inode", "-E", "root_owner=0:0"])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-d")
            .arg(src)
            .arg(out)
            .env("E2FSPROGS_FAKE_TIME", crate::build::EPOCH.to_string())
            .output()
            .map_err(BlockError::NoMkfs)?;
        if res.status.success() {
            return Ok(size);
        }
        let err = String::from_utf8_lossy(&res.stderr).trim().to_string();
        let full =
            err.contains("Could not allocate") || err.contains("No space") || err.contains("inode");
        if !full || attempt == 3 {
            let _ = fs::remove_file(out);
            return Err(BlockError::Mkfs(err));
        }
        tracing::debug!(size, "image did not fit; retrying larger");
        size *= 2;
    }
    Err(BlockError::Mkfs("image does not fit".into()))
}

impl Store {
    /// Path of the block image of `rec` (whether built or not).
    pub fn block_path(&self, rec: &ImageRecord) -> PathBuf {
        self.root()
            .join("blocks")
            .join(format!("{}.ext4", rec.id.hex()))
    }

    /// The read-only ext4 block image of `rec`, built on first use (once across processes).
    pub fn block_image(&self, rec: &ImageRecord) -> Result<BlockImage, BlockError> {
        let path = self.block_path(rec);
        let cached = |built, unpack| -> Result<BlockImage, BlockError> {
            let size = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
            Ok(BlockImage {
                path: path.clone(),
                size,
                built,
                unpack,
            })
        };
        if path.is_file() {
            return cached(false, UnpackStats::default());
        }
        let _g = self.lock(&format!("block-{}", rec.id.hex()))?;
        if path.is_file() {
            return cached(false, UnpackStats::default());
        }
        let work = tempfile::tempdir_in(self.tmp_dir())
            .map_err(io_err("create temp in", &self.tmp_dir()))?;
        let rootfs = work.path().join("rootfs");
        let stats = self.unpack(rec, &rootfs)?;
        let tmp = work.path().join("image.ext4");
        build_ext4(&rootfs, &tmp, "kennel-image")?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))
            .map_err(io_err("chmod", &tmp))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename to", &path))?;
        cached(true, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_checkable_ext4() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/hello"), vec![b'x'; 100_000]).unwrap();
        std::os::unix::fs::symlink("etc/hello", src.join("link")).unwrap();
        let out = d.path().join("img.ext4");
        let size = build_ext4(&src, &out, "t").unwrap();
        assert_eq!(fs::metadata(&out).unwrap().len(), size);
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let cat = Command::new("debugfs")
            .arg("-R")
            .arg("stat /etc/hello")
            .arg(&out)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&cat.stdout).contains("Size: 100000"));
    }
}
