//! Pulling images from a registry into the [`Store`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::try_join_all;

use crate::progress::Progress;
use crate::reference::{Reference, ReferenceError};
use crate::registry::{RegistryClient, RegistryError};
use crate::spec::{parse_manifest, Descriptor, ImageConfig, ManifestDoc, SpecError};
use crate::store::{ImageRecord, Store, StoreError};

/// Errors pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Bad reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Registry failure (includes digest mismatches of downloaded content).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Bad manifest or config.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Local store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A nested index (index pointing at an index) or other unsupported shape.
    #[error("unsupported image layout: {0}")]
    Layout(String),
    /// A blocking task died.
    #[error("background task failed: {0}")]
    Task(String),
}

impl Store {
    /// Pulls `reference` (tag or digest), verifying every blob, and records the image.
    /// Concurrent pulls of the same content (in this process or others) download each blob once.
    pub async fn pull(
        self: &Arc<Self>,
        client: &RegistryClient,
        reference: &str,
        progress: &Progress,
    ) -> Result<ImageRecord, PullError> {
        self.pull_from(client, reference, None, progress).await
    }

    /// [`Store::pull`] with the content fetched from `mirror` (a registry host serving the
    /// same repositories) when given; the image is recorded under `reference` all the same.
    pub async fn pull_from(
        self: &Arc<Self>,
        client: &RegistryClient,
        reference: &str,
        mirror: Option<&str>,
        progress: &Progress,
    ) -> Result<ImageRecord, PullError> {
        let r: Reference = reference.parse()?;
        let (reg, repo) = (mirror.unwrap_or(&r.registry), r.repository.as_str());
        let (top_bytes, top_type, top_digest) =
            client.get_manifest(reg, repo, &r.manifest_ref()).await?;
        let (manifest, manifest_bytes) = match parse_manifest(&top_bytes, top_type.as_deref())? {
            ManifestDoc::Manifest(m) => (m, top_bytes.clone()),
            ManifestDoc::Index(idx) => {
                let entry = idx.select_linux_amd64()?;
                let (bytes, ty, _) = client
                    .get_manifest(reg, repo, entry.digest.as_str())
                    .await?;
                match parse_manifest(&bytes, ty.as_deref().or(Some(&entry.media_type)))? {
                    ManifestDoc::Manifest(m) => (m, bytes),
                    ManifestDoc::Index(_) => {
                        return Err(PullError::Layout("index inside an index".into()))
                    }
                }
            }
        };
        for l in &manifest.layers {
            crate::spec::layer_is_gzip(&l.media_type)?;
        }
        let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .collect();
        try_join_all(
            blobs
                .iter()
                .map(|d| self.fetch_blob(client, reg, repo, d, progress)),
        )
        .await?;
        // manifests are stored too, so the image can be exported or pushed again
        self.put_blob(&manifest_bytes)?;
        self.put_blob(&top_bytes)?;
        let config = self.read_blob(&manifest.config.digest)?;
        serde_json::from_slice::<ImageConfig>(&config).map_err(|source| SpecError::Json {
            what: "image config",
            source,
        })?;
        let rec = ImageRecord {
            id: manifest.config.digest.clone(),
            manifest_digest: top_digest.clone(),
            manifest_media_type: top_type
                .unwrap_or_else(|| manifest.media_type.clone().unwrap_or_default()),
            size: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            config: manifest.config,
            layers: manifest.layers,
            repo_tags: r.tagged().into_iter().collect(),
            repo_digests: vec![r.with_digest(&top_digest)],
        };
        Ok(self.add_image(rec)?)
    }

    /// Downloads one blob unless present, under a per-digest lock (in-process and cross-process).
    async fn fetch_blob(
        self: &Arc<Self>,
        client: &RegistryClient,
        reg: &str,
        repo: &str,
        desc: &Descriptor,
        progress: &Progress,
    ) -> Result<(), PullError> {
        if self.has_blob(&desc.digest) {
            return Ok(());
        }
        let key = desc.digest.hex().to_string();
        let m = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _in_process = m.lock().await;
        let store = self.clone();
        let k = key.clone();
        let _cross_process = tokio::task::spawn_blocking(move || store.lock(&k))
            .await
            .map_err(|e| PullError::Task(e.to_string()))??;
        if self.has_blob(&desc.digest) {
            return Ok(());
        }
        let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(crate::store::io_err("create temp in", &self.tmp_dir()))?;
        let mut out = tokio::fs::File::from_std(
            tmp.reopen()
                .map_err(crate::store::io_err("open", tmp.path()))?,
        );
        let short = &key[..12];
        let bar = progress.bytes(desc.size, format!("{repo} {short}"));
        let n = client.get_blob(reg, repo, desc, &mut out, Some(&bar)).await;
        bar.finish_and_clear();
        let n = n?;
        drop(out);
        self.downloaded.fetch_add(n, Ordering::Relaxed);
        self.commit_blob(tmp, &desc.digest)?;
        Ok(())
    }
}
