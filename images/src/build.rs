//! Writing images: gzip layers from files, config and manifest, OCI-layout archives, registry pushes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::reference::{Reference, ReferenceError};
use crate::registry::{RegistryClient, RegistryError};
use crate::spec::{
    ContainerConfig, Descriptor, ImageConfig, Index, Manifest, RootFs, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER_GZIP, OCI_MANIFEST,
};

/// Fixed modification time of built entries (reproducible images).
pub const EPOCH: u64 = 1_700_000_000;

/// Errors building or writing images.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading an input or writing the output failed.
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
    /// Building the tar stream failed.
    #[error("building layer entry {0:?}")]
    Tar(String, #[source] io::Error),
    /// Bad target reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Push failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Builds one layer (a deterministic tar, gzip-compressed).
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerBuilder").finish_non_exhaustive()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(EPOCH);
    h
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Self { tar }
    }

    /// Adds a directory (`path` relative, no trailing slash needed).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, BuildError> {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
            .map_err(|e| BuildError::Tar(path.into(), e))?;
        Ok(self)
    }

    /// Adds a regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<&mut Self, BuildError> {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .map_err(|e| BuildError::Tar(path.into(), e))?;
        Ok(self)
    }

    /// Adds a regular file copied from the host file `src`.
    pub fn file_from(
        &mut self,
        path: &str,
        mode: u32,
        src: &Path,
    ) -> Result<&mut Self, BuildError> {
        let data = std::fs::read(src).map_err(|source| BuildError::Io {
            op: "read",
            path: src.into(),
            source,
        })?;
        self.file(path, mode, &data)
    }

    /// Adds a symlink `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, BuildError> {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .map_err(|e| BuildError::Tar(path.into(), e))?;
        Ok(self)
    }

    /// Finishes the layer: uncompressed digest (diff id) and the gzip blob.
    pub fn finish(self) -> Result<Layer, BuildError> {
        let raw = self
            .tar
            .into_inner()
            .map_err(|e| BuildError::Tar("<end>".into(), e))?;
        let diff_id = Digest::of(&raw);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw)
            .and_then(|_| gz.flush())
            .map_err(|e| BuildError::Tar("<gzip>".into(), e))?;
        let data = gz
            .finish()
            .map_err(|e| BuildError::Tar("<gzip>".into(), e))?;
        Ok(Layer {
            descriptor: Descriptor::for_bytes(OCI_LAYER_GZIP, &data),
            diff_id,
            data,
        })
    }
}

/// A finished layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Descriptor of the gzip blob.
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The gzip blob.
    pub data: Vec<u8>,
}

/// A complete image in memory: config, manifest and layer blobs.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Config blob.
    pub config: Vec<u8>,
    /// Manifest blob.
    pub manifest: Vec<u8>,
    /// Layers, base first.
    pub layers: Vec<Layer>,
}

impl BuiltImage {
    /// Assembles an OCI image from layers and runtime config.
    pub fn new(layers: Vec<Layer>, runtime: ContainerConfig) -> Self {
        let cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some("2023-11-14T22:13:20Z".into()),
            config: Some(runtime),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
        };
        let config = serde_json::to_vec(&cfg).unwrap_or_default();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor::for_bytes(OCI_CONFIG, &config),
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations: None,
        };
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        Self {
            config,
            manifest,
            layers,
        }
    }

    /// Image id (config digest).
    pub fn id(&self) -> Digest {
        Digest::of(&self.config)
    }

    /// Manifest digest.
    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    /// Stored size: config plus compressed layers.
    pub fn size(&self) -> u64 {
        self.config.len() as u64 + self.layers.iter().map(|l| l.data.len() as u64).sum::<u64>()
    }

    /// Writes an OCI-layout archive (as `skopeo copy … oci-archive:` does), tagged `ref_name`.
    pub fn write_oci_archive(&self, path: &Path, ref_name: &str) -> Result<(), BuildError> {
        let io_err = |source| BuildError::Io {
            op: "write",
            path: path.to_path_buf(),
            source,
        };
        let mut desc = Descriptor::for_bytes(OCI_MANIFEST, &self.manifest);
        desc.annotations = Some(BTreeMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            ref_name.to_string(),
        )]));
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![desc],
            annotations: None,
        };
        let index = serde_json::to_vec(&index).unwrap_or_default();
        let tmp_path = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp_path).map_err(io_err)?;
        let mut tar = tar::Builder::new(io::BufWriter::new(file));
        let mut add = |name: &str, data: &[u8]| -> Result<(), BuildError> {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            tar.append_data(&mut h, name, data)
                .map_err(|e| BuildError::Tar(name.into(), e))
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json", &index)?;
        add(
            &format!("blobs/sha256/{}", self.manifest_digest().hex()),
            &self.manifest,
        )?;
        add(&format!("blobs/sha256/{}", self.id().hex()), &self.config)?;
        for l in &self.layers {
            add(
                &format!("blobs/sha256/{}", l.descriptor.digest.hex()),
                &l.data,
            )?;
        }
        let w = tar.into_inner().map_err(io_err)?;
        let f = w.into_inner().map_err(|e| io_err(e.into_error()))?;
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp_path, path).map_err(io_err)?;
        Ok(())
    }

    /// Pushes blobs and manifest to `reference` (`host:port/repo:tag`); returns the manifest digest.
    pub async fn push(
        &self,
        client: &RegistryClient,
        reference: &str,
    ) -> Result<Digest, BuildError> {
        let r: Reference = reference.parse()?;
        let (reg, repo) = (r.registry.as_str(), r.repository.as_str());
        for l in &self.layers {
            client
                .push_blob(reg, repo, &l.descriptor.digest, l.data.clone())
                .await?;
        }
        client
            .push_blob(reg, repo, &self.id(), self.config.clone())
            .await?;
        let d = client
            .put_manifest(
                reg,
                repo,
                &r.manifest_ref(),
                OCI_MANIFEST,
                self.manifest.clone(),
            )
            .await?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_reproducible_and_archives_import() {
        let mk = || {
            let mut b = LayerBuilder::new();
            b.dir("etc", 0o755)
                .unwrap()
                .file("etc/motd", 0o644, b"hi\n")
                .unwrap()
                .symlink("motd", "etc/motd")
                .unwrap();
            b.finish().unwrap()
        };
        let (a, b) = (mk(), mk());
        assert_eq!(a.descriptor.digest, b.descriptor.digest);
        let img = BuiltImage::new(
            vec![a],
            ContainerConfig {
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            },
        );
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("img.tar");
        img.write_oci_archive(&archive, "x:1").unwrap();
        let store = crate::store::Store::open(d.path().join("store")).unwrap();
        let recs = store
            .import_archive(
                &archive,
                Some("example.com/x:1"),
                &crate::progress::Progress::hidden(),
            )
            .unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].id, img.id());
        assert_eq!(recs[0].repo_tags, vec!["example.com/x:1".to_string()]);
        let root = d.path().join("root");
        store.unpack(&recs[0], &root).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("motd")).unwrap(), "hi\n");
    }
}
