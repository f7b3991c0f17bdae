//! Importing image archives: `docker save` tarballs and OCI-layout archives (`skopeo copy … oci-archive:`).
//!
//! Every blob is hashed while it streams into the store; OCI blobs must match their file names, and
//! `docker save` layers must match the config's `diff_ids`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{Digest, DigestError, HashingWriter};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::spec::{
    parse_manifest, Descriptor, ImageConfig, Manifest, ManifestDoc, SpecError, DOCKER_CONFIG,
    DOCKER_LAYER_TAR, DOCKER_MANIFEST,
};
use crate::store::{ImageRecord, Store, StoreError};

/// Largest metadata file (index.json, manifest.json) read into memory.
const MAX_META: u64 = 4 << 20;

/// Errors importing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Cannot read the archive.
    #[error("reading archive {path:?}")]
    Io {
        /// The archive.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Neither `index.json` nor `manifest.json` found.
    #[error("not an image archive: no index.json (OCI layout) or manifest.json (docker save)")]
    UnknownFormat,
    /// The archive refers to a file it does not contain.
    #[error("archive lacks {0:?}")]
    Missing(String),
    /// A metadata file is malformed.
    #[error("malformed {what} in archive: {source}")]
    Json {
        /// Which file.
        what: &'static str,
        /// Parser error.
        source: serde_json::Error,
    },
    /// A blob file does not hash to its name, or a layer to its diff id.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Bad manifest.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No name for an image (pass one).
    #[error("image {0} has no name in the archive; pass a name")]
    NoName(Digest),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Files of an archive: small metadata in memory, every other file stored as a blob.
#[derive(Default)]
struct Contents {
    meta: HashMap<String, Vec<u8>>,
    files: HashMap<String, (Digest, u64)>,
}

fn normalise(p: &Path) -> String {
    p.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_meta(name: &str) -> bool {
    matches!(
        name,
        "index.json" | "manifest.json" | "oci-layout" | "repositories"
    )
}

impl Store {
    fn read_archive(&self, path: &Path, progress: &Progress) -> Result<Contents, ArchiveError> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(io_err)?;
        let len = f.metadata().map_err(io_err)?.len();
        let bar = progress.bytes(len, "import");
        let reader = crate::unpack::open_layer(bar.wrap_read(f)).map_err(|e| ArchiveError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
        let mut ar = tar::Archive::new(reader);
        let mut c = Contents::default();
        for e in ar.entries().map_err(io_err)? {
            let mut e = e.map_err(io_err)?;
            if !e.header().entry_type().is_file() {
                continue;
            }
            let name = normalise(&e.path().map_err(io_err)?);
            if is_meta(&name) {
                let mut buf = Vec::new();
                (&mut e)
                    .take(MAX_META)
                    .read_to_end(&mut buf)
                    .map_err(io_err)?;
                c.meta.insert(name, buf);
                continue;
            }
            let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir()).map_err(io_err)?;
            let mut w = HashingWriter::new(tmp.reopen().map_err(io_err)?);
            io::copy(&mut e, &mut w).map_err(io_err)?;
            let (_, h) = w.into_parts();
            let size = h.len();
            let digest = h.finish();
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let expected = Digest::from_hex(hex)?;
                if expected != digest {
                    return Err(DigestError::Mismatch {
                        expected,
                        actual: digest,
                    }
                    .into());
                }
            }
            if !self.has_blob(&digest) {
                self.commit_blob(tmp, &digest)?;
            }
            c.files.insert(name, (digest, size));
        }
        bar.finish_and_clear();
        Ok(c)
    }

    /// Imports every image of a `docker save` or OCI-layout archive (optionally gzip-compressed).
    /// `name` tags the images when the archive names none (or renames a single image).
    pub fn import_archive(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: &Progress,
    ) -> Result<Vec<ImageRecord>, ArchiveError> {
        let c = self.read_archive(path, progress)?;
        let name = match name {
            Some(n) => Some(n.parse::<Reference>().map_err(StoreError::from)?),
            None => None,
        };
        let mut out = Vec::new();
        if let Some(index) = c.meta.get("index.json") {
            let ManifestDoc::Index(index) = parse_manifest(index, Some(crate::spec::OCI_INDEX))?
            else {
                return Err(ArchiveError::UnknownFormat);
            };
            for entry in &index.manifests {
                let ann = entry.annotations.clone().unwrap_or_default();
                let ref_name = ann
                    .get("io.containerd.image.name")
                    .or(ann.get("org.opencontainers.image.ref.name"));
                let tag = match (&name, ref_name) {
                    (Some(n), _) => n.tagged(),
                    (None, Some(r)) => r.parse::<Reference>().ok().and_then(|r| r.tagged()),
                    (None, None) => None,
                };
                let (manifest, digest, media_type) = self.oci_manifest(entry)?;
                out.push(self.record(manifest, digest, media_type, tag)?);
            }
        } else if let Some(m) = c.meta.get("manifest.json") {
            let entries: Vec<DockerSaveEntry> =
                serde_json::from_slice(m).map_err(|source| ArchiveError::Json {
                    what: "manifest.json",
                    source,
                })?;
            for e in entries {
                let file = |p: &str| {
                    c.files
                        .get(&normalise(Path::new(p)))
                        .cloned()
                        .ok_or_else(|| ArchiveError::Missing(p.to_string()))
                };
                let (cfg_digest, cfg_size) = file(&e.config)?;
                let cfg: ImageConfig = serde_json::from_slice(&self.read_blob(&cfg_digest)?)
                    .map_err(|source| ArchiveError::Json {
                        what: "image config",
                        source,
                    })?;
                let mut layers = Vec::new();
                for (i, l) in e.layers.iter().enumerate() {
                    let (d, size) = file(l)?;
                    if let Some(diff_id) = cfg.rootfs.diff_ids.get(i) {
                        if diff_id != &d {
                            return Err(DigestError::Mismatch {
                                expected: diff_id.clone(),
                                actual: d,
                            }
                            .into());
                        }
                    }
                    // docker save layers are plain tars (gzip is still detected by magic when unpacking)
                    layers.push(Descriptor {
                        media_type: DOCKER_LAYER_TAR.into(),
                        digest: d,
                        size,
                        platform: None,
                        annotations: None,
                    });
                }
                let manifest = Manifest {
                    schema_version: 2,
                    media_type: Some(DOCKER_MANIFEST.into()),
                    config: Descriptor {
                        media_type: DOCKER_CONFIG.into(),
                        digest: cfg_digest,
                        size: cfg_size,
                        platform: None,
                        annotations: None,
                    },
                    layers,
                    annotations: None,
                };
                let bytes = serde_json::to_vec(&manifest).map_err(|source| ArchiveError::Json {
                    what: "manifest",
                    source,
                })?;
                let digest = self.put_blob(&bytes)?;
                let tag = match &name {
                    Some(n) => n.tagged(),
                    None => e
                        .repo_tags
                        .unwrap_or_default()
                        .first()
                        .and_then(|t| t.parse::<Reference>().ok())
                        .and_then(|r| r.tagged()),
                };
                out.push(self.record(manifest, digest, DOCKER_MANIFEST.into(), tag)?);
            }
        } else {
            return Err(ArchiveError::UnknownFormat);
        }
        Ok(out)
    }

    /// Resolves an index entry of an OCI layout to a single-platform manifest.
    fn oci_manifest(&self, entry: &Descriptor) -> Result<(Manifest, Digest, String), ArchiveError> {
        let bytes = self.read_blob(&entry.digest).map_err(|e| match e {
            StoreError::MissingBlob(d) => {
                ArchiveError::Missing(format!("blobs/sha256/{}", d.hex()))
            }
            e => e.into(),
        })?;
        match parse_manifest(&bytes, Some(&entry.media_type))? {
            ManifestDoc::Manifest(m) => Ok((m, entry.digest.clone(), entry.media_type.clone())),
            ManifestDoc::Index(idx) => {
                let inner = idx.select_linux_amd64()?.clone();
                let (m, _, _) = self.oci_manifest(&inner)?;
                Ok((m, entry.digest.clone(), entry.media_type.clone()))
            }
        }
    }

    fn record(
        &self,
        m: Manifest,
        digest: Digest,
        media_type: String,
        tag: Option<String>,
    ) -> Result<ImageRecord, ArchiveError> {
        for l in &m.layers {
            crate::spec::layer_is_gzip(&l.media_type)?;
        }
        serde_json::from_slice::<ImageConfig>(&self.read_blob(&m.config.digest)?).map_err(
            |source| ArchiveError::Json {
                what: "image config",
                source,
            },
        )?;
        let repo_digests = match &tag {
            Some(t) => t
                .parse::<Reference>()
                .map(|r| vec![r.with_digest(&digest)])
                .unwrap_or_default(),
            None => vec![],
        };
        if tag.is_none() && repo_digests.is_empty() {
            tracing::info!(id = %m.config.digest, "imported image has no name; reachable by id only");
        }
        let rec = ImageRecord {
            id: m.config.digest.clone(),
            manifest_digest: digest,
            manifest_media_type: media_type,
            size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            config: m.config,
            layers: m.layers,
            repo_tags: tag.into_iter().collect(),
            repo_digests,
        };
        Ok(self.add_image(rec)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::LayerBuilder;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (n, d) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, n, *d).unwrap();
        }
        t.into_inner().unwrap()
    }

    #[test]
    fn imports_docker_save_archive() {
        let mut lb = LayerBuilder::new();
        lb.file("hello", 0o644, b"world").unwrap();
        let layer = lb.finish().unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&layer.data[..])
            .read_to_end(&mut raw)
            .unwrap();
        let cfg = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            layer.diff_id
        );
        let cfg_hex = Digest::of(cfg.as_bytes()).hex().to_string();
        let manifest = format!(
            r#"[{{"Config":"{cfg_hex}.json","RepoTags":["busybox:save"],"Layers":["abc/layer.tar"]}}]"#
        );
        let archive = tar_of(&[
            ("manifest.json", manifest.as_bytes()),
            (&format!("{cfg_hex}.json"), cfg.as_bytes()),
            ("abc/layer.tar", &raw),
        ]);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("save.tar");
        std::fs::write(&path, &archive).unwrap();
        let s = Store::open(d.path().join("s")).unwrap();
        let recs = s.import_archive(&path, None, &Progress::hidden()).unwrap();
        assert_eq!(
            recs[0].repo_tags,
            vec!["docker.io/library/busybox:save".to_string()]
        );
        assert_eq!(
            s.resolve("busybox:save").unwrap().unwrap().id.hex(),
            cfg_hex
        );
        s.unpack(&recs[0], &d.path().join("root")).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("root/hello")).unwrap(),
            b"world"
        );

        // a layer that does not match the config's diff_ids is rejected
        let bad = tar_of(&[
            ("manifest.json", manifest.as_bytes()),
            (&format!("{cfg_hex}.json"), cfg.as_bytes()),
            ("abc/layer.tar", b"junk"),
        ]);
        std::fs::write(&path, &bad).unwrap();
        let s2 = Store::open(d.path().join("s2")).unwrap();
        assert!(matches!(
            s2.import_archive(&path, None, &Progress::hidden()),
            Err(ArchiveError::Digest(_))
        ));
        assert!(s2.list().unwrap().is_empty());
    }

    #[test]
    fn rejects_unknown_and_tampered_archives() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("s")).unwrap();
        let path = d.path().join("a.tar");
        std::fs::write(&path, tar_of(&[("hello", b"x")])).unwrap();
        assert!(matches!(
            s.import_archive(&path, None, &Progress::hidden()),
            Err(ArchiveError::UnknownFormat)
        ));
        let fake = format!("blobs/sha256/{}", "0".repeat(64));
        std::fs::write(&path, tar_of(&[(&fake, b"x")])).unwrap();
        assert!(matches!(
            s.import_archive(&path, None, &Progress::hidden()),
            Err(ArchiveError::Digest(_))
        ));
    }
}
