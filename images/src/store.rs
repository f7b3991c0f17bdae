//! Content-addressed image store with CRI reference semantics.
//!
//! Layout under the root:
//! - `blobs/sha256/<hex>`: verified content (manifests, configs, layers), written temp → fsync → rename;
//! - `images/<id-hex>.json`: one [`ImageRecord`] per image (id = config digest), written last, so a crash
//!   mid-pull never shows a half image;
//! - `blocks/<id-hex>.ext4`: the flattened read-only block image;
//! - `tmp/`: downloads and unpacks in progress; `locks/`: cross-process file locks.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fs4::FileExt;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, DigestError};
use crate::reference::{Reference, ReferenceError};
use crate::spec::{Descriptor, ImageConfig, SpecError};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem error on a path.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No image matches the reference.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// A blob is missing from the store.
    #[error("blob {0} missing from store")]
    MissingBlob(Digest),
    /// Stored content failed verification.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Bad reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Bad image metadata.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A stored image record is corrupt.
    #[error("corrupt image record {path}: {source}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Parser error.
        source: serde_json::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One image as the store (and CRI) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// Image id: the config digest.
    pub id: Digest,
    /// Digest of the manifest (or index) it was pulled or imported as.
    pub manifest_digest: Digest,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    /// `registry/repo:tag` references.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:…` references.
    pub repo_digests: Vec<String>,
    /// Stored size in bytes (config + layers as stored).
    pub size: u64,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// Only the named tag was removed; the image stays for its other references.
    Untagged,
    /// The image and its unshared blobs are gone.
    Image(Digest),
}

/// Disk usage of the store, as CRI's ImageFsInfo wants it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes used (allocated blocks).
    pub bytes: u64,
    /// Inodes used.
    pub inodes: u64,
}

/// The image store. Cheap to share behind an `Arc`; safe across threads and processes.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    pub(crate) inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) downloaded: AtomicU64,
}

/// An exclusive cross-process lock held until dropped.
#[derive(Debug)]
pub struct FileLock(File);

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.0);
    }
}

/// Writes `data` to `path` atomically (temp file in the same dir, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err("create temp in", dir))?;
    tmp.write_all(data).map_err(io_err("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err("fsync", path))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        op: "rename to",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for d in ["blobs/sha256", "images", "blocks", "tmp", "locks"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(Self {
            root,
            inflight: Mutex::default(),
            downloaded: AtomicU64::new(0),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory for temporary files (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Bytes downloaded from registries by this handle (shared work is counted once).
    pub fn downloaded_bytes(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Takes the exclusive lock named `name` (blocking).
    pub fn lock(&self, name: &str) -> Result<FileLock, StoreError> {
        let p = self.root.join("locks").join(format!("{name}.lock"));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("open", &p))?;
        FileExt::lock(&f).map_err(io_err("lock", &p))?;
        Ok(FileLock(f))
    }

    /// Path of a blob (whether present or not).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// True when the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Reads a (small) blob and verifies it.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let data = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(d.clone()),
            _ => StoreError::Io {
                op: "read",
                path: p.clone(),
                source: e,
            },
        })?;
        d.verify(&data)?;
        Ok(data)
    }

    /// Stores `data` as a blob; returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(data);
        if !self.has_blob(&d) {
            write_atomic(&self.blob_path(&d), data)?;
        }
        Ok(d)
    }

    /// Moves an already verified temp file into place as blob `d`.
    pub fn commit_blob(&self, tmp: tempfile::NamedTempFile, d: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(d);
        tmp.as_file()
            .sync_all()
            .map_err(io_err("fsync", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            op: "rename to",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let p = e.map_err(io_err("list", &dir))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let data = match fs::read(&p) {
                    Ok(d) => d,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StoreError::Io {
                            op: "read",
                            path: p,
                            source: e,
                        })
                    }
                };
                out.push(
                    serde_json::from_slice(&data)
                        .map_err(|source| StoreError::Record { path: p, source })?,
                );
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Finds an image by id (`sha256:…`, full hex or a unique hex prefix of ≥ 12), tag or repo digest.
    pub fn resolve(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let images = self.list()?;
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<_> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            if let [one] = hits.as_slice() {
                return Ok(Some((*one).clone()));
            }
            if reference.starts_with("sha256:") {
                return Ok(None);
            }
        }
        let Ok(r) = reference.parse::<Reference>() else {
            return Ok(None);
        };
        let found = images.into_iter().find(|i| match (&r.digest, r.tagged()) {
            (Some(d), _) => i.repo_digests.contains(&r.with_digest(d)) || &i.manifest_digest == d,
            (None, Some(t)) => i.repo_tags.contains(&t),
            (None, None) => false,
        });
        Ok(found)
    }

    /// Adds (or merges into) an image record: its tags move here from any other image.
    pub fn add_image(&self, mut rec: ImageRecord) -> Result<ImageRecord, StoreError> {
        for d in std::iter::once(&rec.config.digest).chain(rec.layers.iter().map(|l| &l.digest)) {
            if !self.has_blob(d) {
                return Err(StoreError::MissingBlob(d.clone()));
            }
        }
        let _g = self.lock("store")?;
        for mut other in self.list()? {
            if other.id == rec.id {
                let tags: BTreeSet<_> = other
                    .repo_tags
                    .drain(..)
                    .chain(rec.repo_tags.drain(..))
                    .collect();
                let digests: BTreeSet<_> = other
                    .repo_digests
                    .drain(..)
                    .chain(rec.repo_digests.drain(..))
                    .collect();
                rec.repo_tags = tags.into_iter().collect();
                rec.repo_digests = digests.into_iter().collect();
            } else if other.repo_tags.iter().any(|t| rec.repo_tags.contains(t)) {
                other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
                self.write_record(&other)?;
            }
        }
        self.write_record(&rec)?;
        Ok(rec)
    }

    fn write_record(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(rec).map_err(|source| StoreError::Record {
            path: self.record_path(&rec.id),
            source,
        })?;
        write_atomic(&self.record_path(&rec.id), &data)
    }

    /// The parsed config of an image.
    pub fn config(&self, rec: &ImageRecord) -> Result<ImageConfig, StoreError> {
        let data = self.read_blob(&rec.config.digest)?;
        serde_json::from_slice(&data).map_err(|source| {
            SpecError::Json {
                what: "image config",
                source,
            }
            .into()
        })
    }

    /// Removes a reference. A tag shared with other tags is just untagged; otherwise (or for an id or
    /// digest) the image goes, with its block image and the blobs no other image uses.
    pub fn remove(&self, reference: &str) -> Result<Removed, StoreError> {
        let rec = self
            .resolve(reference)?
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))?;
        let _g = self.lock("store")?;
        let tag = reference
            .parse::<Reference>()
            .ok()
            .filter(|r| r.digest.is_none())
            .and_then(|r| r.tagged());
        let mut rec = match fs::read(self.record_path(&rec.id)) {
            Ok(d) => {
                serde_json::from_slice::<ImageRecord>(&d).map_err(|source| StoreError::Record {
                    path: self.record_path(&rec.id),
                    source,
                })?
            }
            Err(_) => return Err(StoreError::NotFound(reference.to_string())),
        };
        if let Some(t) = tag.filter(|t| rec.repo_tags.contains(t)) {
            if rec.repo_tags.len() > 1 {
                rec.repo_tags.retain(|x| x != &t);
                self.write_record(&rec)?;
                return Ok(Removed::Untagged);
            }
        }
        let p = self.record_path(&rec.id);
        fs::remove_file(&p).map_err(io_err("remove", &p))?;
        self.gc_locked()?;
        Ok(Removed::Image(rec.id))
    }

    /// Deletes blobs and block images no image refers to, and temp files older than an hour.
    pub fn gc(&self) -> Result<(), StoreError> {
        let _g = self.lock("store")?;
        self.gc_locked()
    }

    fn gc_locked(&self) -> Result<(), StoreError> {
        let images = self.list()?;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for i in &images {
            keep.insert(i.id.hex().to_string());
            keep.insert(i.manifest_digest.hex().to_string());
            keep.extend(i.layers.iter().map(|l| l.digest.hex().to_string()));
        }
        // Blobs being pulled right now are protected by their digest locks: skip those that are busy.
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if keep.contains(&name) {
                continue;
            }
            let lp = self.root.join("locks").join(format!("{name}.lock"));
            let busy = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lp)
                .map(|f| {
                    let free = FileExt::try_lock(&f).is_ok();
                    if free {
                        let _ = fs::remove_file(e.path());
                        let _ = FileExt::unlock(&f);
                    }
                    !free
                });
            if busy.is_ok_and(|b| !b) {
                let _ = fs::remove_file(&lp);
            }
        }
        // temp files of pulls that crashed (live pulls touch theirs constantly)
        let tmp = self.tmp_dir();
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in fs::read_dir(&tmp).map_err(io_err("list", &tmp))?.flatten() {
            if e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < stale)
            {
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        let blocks = self.root.join("blocks");
        for e in fs::read_dir(&blocks)
            .map_err(io_err("list", &blocks))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = name.split('.').next().unwrap_or("");
            if !keep.contains(stem) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Bytes and inodes used by the store.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        use std::os::unix::fs::MetadataExt as _;
        let mut usage = DiskUsage::default();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let Ok(md) = e.metadata() else { continue };
                usage.inodes += 1;
                usage.bytes += md.blocks() * 512;
                if md.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(store: &Store, cfg: &[u8], tags: &[&str]) -> ImageRecord {
        let id = store.put_blob(cfg).unwrap();
        let layer = store.put_blob(b"layer").unwrap();
        ImageRecord {
            id: id.clone(),
            manifest_digest: Digest::of(b"m"),
            manifest_media_type: crate::spec::OCI_MANIFEST.into(),
            config: Descriptor::for_bytes(crate::spec::OCI_CONFIG, cfg),
            layers: vec![Descriptor {
                digest: layer,
                ..Descriptor::for_bytes(crate::spec::OCI_LAYER_TAR, b"layer")
            }],
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            size: 10,
        }
    }

    #[test]
    fn tags_move_and_untag_keeps_image() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .add_image(rec(
                &s,
                b"{\"a\":1}",
                &["docker.io/library/x:1", "docker.io/library/x:latest"],
            ))
            .unwrap();
        assert_eq!(s.resolve("x").unwrap().unwrap().id, a.id);
        assert_eq!(s.resolve(&a.id.to_string()).unwrap().unwrap().id, a.id);
        assert_eq!(s.resolve(&a.id.hex()[..12]).unwrap().unwrap().id, a.id);
        // the tag `latest` moves to b
        let b = s
            .add_image(rec(&s, b"{\"b\":1}", &["docker.io/library/x:latest"]))
            .unwrap();
        assert_eq!(s.resolve("x:latest").unwrap().unwrap().id, b.id);
        assert_eq!(
            s.resolve("x:1").unwrap().unwrap().repo_tags,
            vec!["docker.io/library/x:1".to_string()]
        );
        // b gets a second tag, then loses one: still there
        s.add_image(rec(&s, b"{\"b\":1}", &["docker.io/library/y:2"]))
            .unwrap();
        assert_eq!(s.remove("x:latest").unwrap(), Removed::Untagged);
        assert_eq!(s.resolve("y:2").unwrap().unwrap().id, b.id);
        assert!(s.resolve("x:latest").unwrap().is_none());
        // removing the last tag removes the image; the shared layer blob stays for a
        assert_eq!(s.remove("y:2").unwrap(), Removed::Image(b.id.clone()));
        assert!(!s.has_blob(&b.id));
        assert!(s.has_blob(&a.layers[0].digest));
        assert!(matches!(s.remove("y:2"), Err(StoreError::NotFound(_))));
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(s.disk_usage().unwrap().bytes > 0);
    }

    #[test]
    fn add_image_requires_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut r = rec(&s, b"{}", &[]);
        r.layers[0].digest = Digest::of(b"absent");
        assert!(matches!(s.add_image(r), Err(StoreError::MissingBlob(_))));
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn read_blob_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = s.put_blob(b"hello").unwrap();
        fs::write(s.blob_path(&d), b"jello").unwrap();
        assert!(matches!(s.read_blob(&d), Err(StoreError::Digest(_))));
    }
}
