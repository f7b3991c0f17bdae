//! Safe layer unpacking: tar (+gzip) layers applied in order with OCI whiteouts.
//!
//! Every entry path is cleaned (`..` and absolute paths are rejected) and its parent directories are
//! resolved inside the target root, following symlinks as the container would see them (absolute targets
//! are relative to the root). Nothing is ever written outside the root: writes go to a real directory
//! inside it, and a final-component symlink is replaced, never followed. Device nodes and FIFOs are skipped.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use crate::store::{ImageRecord, Store, StoreError};

/// Most symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: usize = 40;

/// Errors unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry path contains `..`.
    #[error("layer entry {0:?} contains '..' (path traversal)")]
    Traversal(PathBuf),
    /// An entry path is absolute.
    #[error("layer entry {0:?} is an absolute path")]
    Absolute(PathBuf),
    /// A symlink (entry or on the way to one) points outside the root.
    #[error("symlink {path:?} -> {target:?} escapes the image root")]
    EscapingSymlink {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// Too many symlinks on the way.
    #[error("too many levels of symlinks resolving {0:?}")]
    SymlinkLoop(PathBuf),
    /// A parent of an entry exists but is not a directory.
    #[error("parent of {0:?} is not a directory")]
    NotADirectory(PathBuf),
    /// A hard link to something absent or not linkable.
    #[error("hard link {path:?} -> {target:?}: target missing or a directory")]
    Hardlink {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// The layer is not a readable tar (or gzip).
    #[error("malformed layer archive")]
    Archive(#[source] io::Error),
    /// Compression this crate cannot read.
    #[error("unsupported layer compression ({0})")]
    Compression(&'static str),
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
    /// Reading the layer blob from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Counts of what a layer or image unpack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Whiteouts applied (including opaque dirs).
    pub whiteouts: u64,
    /// Device nodes, FIFOs and other special entries skipped.
    pub skipped: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Opens a layer stream, decompressing gzip when the magic bytes say so.
pub fn open_layer<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut r = BufReader::with_capacity(1 << 16, r);
    let head = r.fill_buf().map_err(UnpackError::Archive)?;
    match head {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Err(UnpackError::Compression("zstd")),
        _ => Ok(Box::new(r)),
    }
}

/// Cleans an entry path to root-relative normal components.
fn clean(p: &Path) -> Result<Vec<OsString>, UnpackError> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnpackError::Traversal(p.to_path_buf())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Absolute(p.to_path_buf()))
            }
        }
    }
    Ok(out)
}

/// Lexically applies a symlink target to the directory `base` (root-relative components).
/// `None` when a relative target climbs above the root.
fn apply_target(base: &[OsString], target: &Path) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = if target.is_absolute() {
        Vec::new()
    } else {
        base.to_vec()
    };
    for c in target.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                // above the root: relative targets escape, absolute ones clamp at "/"
                let popped = out.pop();
                if popped.is_none() && !target.is_absolute() {
                    return None;
                }
            }
            _ => {}
        }
    }
    Some(out)
}

fn join(root: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(comps);
    p
}

/// Unpacks layers into one directory tree.
struct Unpacker<'a> {
    root: &'a Path,
    created: HashSet<PathBuf>,
    dir_modes: Vec<(PathBuf, u32)>,
    stats: UnpackStats,
    is_root: bool,
}

impl<'a> Unpacker<'a> {
    /// Resolves `dir` (root-relative components) to a real directory inside root, creating missing ones.
    fn resolve_dir(
        &mut self,
        dir: &[OsString],
        entry: &Path,
    ) -> Result<Vec<OsString>, UnpackError> {
        let mut done: Vec<OsString> = Vec::new();
        let mut todo: Vec<OsString> = dir.iter().rev().cloned().collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            let cand = join(self.root, &done).join(&c);
            match fs::symlink_metadata(&cand) {
                Ok(md) if md.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(UnpackError::SymlinkLoop(entry.to_path_buf()));
                    }
                    let target = fs::read_link(&cand).map_err(io_err("readlink", &cand))?;
                    let resolved = apply_target(&done, &target).ok_or_else(|| {
                        UnpackError::EscapingSymlink {
                            path: cand.clone(),
                            target: target.clone(),
                        }
                    })?;
                    done.clear();
                    todo.extend(resolved.into_iter().rev());
                }
                Ok(md) if md.is_dir() => done.push(c),
                Ok(_) => return Err(UnpackError::NotADirectory(entry.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cand).map_err(io_err("create dir", &cand))?;
                    self.stats.dirs += 1;
                    done.push(c);
                }
                Err(e) => {
                    return Err(UnpackError::Io {
                        op: "stat",
                        path: cand,
                        source: e,
                    })
                }
            }
        }
        Ok(done)
    }

    /// Removes whatever is at `p` (not following symlinks). Keeps a directory when `keep_dir`.
    fn clear(&self, p: &Path, keep_dir: bool) -> Result<(), UnpackError> {
        match fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => {
                if !keep_dir {
                    fs::remove_dir_all(p).map_err(io_err("remove", p))?;
                }
            }
            Ok(_) => fs::remove_file(p).map_err(io_err("remove", p))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(UnpackError::Io {
                    op: "stat",
                    path: p.to_path_buf(),
                    source: e,
                })
            }
        }
        Ok(())
    }

    fn owner(&self, p: &Path, uid: u64, gid: u64) -> Result<(), UnpackError> {
        if !self.is_root {
            return Ok(());
        }
        let (uid, gid) = (
            u32::try_from(uid).unwrap_or(0),
            u32::try_from(gid).unwrap_or(0),
        );
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(io_err("chown", p))
    }

    fn layer(&mut self, r: impl Read) -> Result<(), UnpackError> {
        self.created.clear();
        let mut ar = tar::Archive::new(r);
        for entry in ar.entries().map_err(UnpackError::Archive)? {
            let mut entry = entry.map_err(UnpackError::Archive)?;
            self.entry(&mut entry)?;
        }
        for (p, mode) in self.dir_modes.drain(..).rev() {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &p))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = e.path().map_err(UnpackError::Archive)?.into_owned();
        let comps = clean(&raw)?;
        let kind = e.header().entry_type();
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (e.header().uid().unwrap_or(0), e.header().gid().unwrap_or(0));
        let Some((name, parent)) = comps.split_last() else {
            // the root itself ("./")
            if kind.is_dir() {
                self.dir_modes.push((self.root.to_path_buf(), mode));
            }
            return Ok(());
        };
        let parent = self.resolve_dir(parent, &raw)?;
        let dir = join(self.root, &parent);
        let name_s = name.to_string_lossy();
        if name_s == ".wh..wh..opq" {
            for c in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
                let c = c.map_err(io_err("list", &dir))?.path();
                if !self.created.contains(&c) {
                    self.clear(&c, false)?;
                }
            }
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if let Some(hidden) = name_s.strip_prefix(".wh.") {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Traversal(raw));
            }
            self.clear(&dir.join(hidden), false)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let path = dir.join(name);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.clear(&path, true)?;
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(io_err("create dir", &path))?;
                }
                self.owner(&path, uid, gid)?;
                self.dir_modes.push((path.clone(), mode));
                self.stats.dirs += 1;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.clear(&path, false)?;
                let mut f = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                let n = io::copy(e, &mut f).map_err(UnpackError::Archive)?;
                if let Ok(mtime) = e.header().mtime() {
                    let _ = f.set_modified(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime),
                    );
                }
                drop(f);
                self.owner(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &path))?;
                self.stats.files += 1;
                self.stats.bytes += n;
            }
            T::Symlink => {
                let target = e
                    .link_name()
                    .map_err(UnpackError::Archive)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.as_os_str().is_empty() || apply_target(&parent, &target).is_none() {
                    return Err(UnpackError::EscapingSymlink { path: raw, target });
                }
                self.clear(&path, false)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_err("symlink", &path))?;
                self.owner(&path, uid, gid)?;
                self.stats.symlinks += 1;
            }
            T::Link => {
                let target = e
                    .link_name()
                    .map_err(UnpackError::Archive)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let tcomps = clean(&target)?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(UnpackError::Hardlink { path: raw, target });
                };
                let tdir = self.resolve_dir(tparent, &target)?;
                let tpath = join(self.root, &tdir).join(tname);
                match fs::symlink_metadata(&tpath) {
                    Ok(md) if !md.is_dir() => {}
                    _ => return Err(UnpackError::Hardlink { path: raw, target }),
                }
                if tpath != path {
                    self.clear(&path, false)?;
                    fs::hard_link(&tpath, &path).map_err(io_err("hard link", &path))?;
                }
                self.stats.hardlinks += 1;
            }
            T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink => return Ok(()),
            _ => {
                tracing::debug!(path = %raw.display(), ?kind, "skipping special file");
                self.stats.skipped += 1;
                return Ok(());
            }
        }
        self.created.insert(path);
        Ok(())
    }
}

/// Applies one layer (tar, optionally gzip) onto `root`, which must be an existing directory.
pub fn unpack_layer(layer: impl Read, root: &Path) -> Result<UnpackStats, UnpackError> {
    let mut u = Unpacker::new(root)?;
    u.layer(open_layer(layer)?)?;
    Ok(u.stats)
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Result<Self, UnpackError> {
        if !root.is_dir() {
            return Err(UnpackError::NotADirectory(root.to_path_buf()));
        }
        let is_root = effective_uid() == 0;
        Ok(Self {
            root,
            created: HashSet::new(),
            dir_modes: Vec::new(),
            stats: UnpackStats::default(),
            is_root,
        })
    }
}

/// Our effective uid: `/proc/self` is owned by it (avoids an unsafe libc call here).
fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

impl Store {
    /// Unpacks every layer of `rec`, base first, into `target` (created if missing).
    pub fn unpack(&self, rec: &ImageRecord, target: &Path) -> Result<UnpackStats, UnpackError> {
        fs::create_dir_all(target).map_err(io_err("create", target))?;
        let mut u = Unpacker::new(target)?;
        for l in &rec.layers {
            crate::spec::layer_is_gzip(&l.media_type).map_err(StoreError::from)?;
            let p = self.blob_path(&l.digest);
            let f = File::open(&p).map_err(|_| StoreError::MissingBlob(l.digest.clone()))?;
            u.layer(open_layer(f)?)?;
        }
        Ok(u.stats)
    }
}

#[cfg(test)]
mod tests;
