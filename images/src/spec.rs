//! OCI image-spec and Docker schema-2 wire types (manifests, indexes, configs).
//!
//! These are external formats: unknown fields are ignored (not denied) so newer images still parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker schema-2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer (as in `docker save`).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Accept header listing every manifest type this crate understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Errors parsing image metadata.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// JSON did not parse as the expected document.
    #[error("malformed {what}: {source}")]
    Json {
        /// The document kind.
        what: &'static str,
        /// Parser error.
        source: serde_json::Error,
    },
    /// A manifest type this crate cannot handle.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// An index without a linux/amd64 entry.
    #[error("no linux/amd64 image in index (platforms: {0})")]
    NoPlatform(String),
    /// A layer compression this crate cannot decode.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
}

/// Target platform of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// A descriptor for `data` with `media_type`.
    pub fn for_bytes(media_type: &str, data: &[u8]) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
            annotations: None,
        }
    }
}

/// An image manifest (OCI or Docker schema 2; same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Manifest media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index / manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Index media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Index {
    /// The linux/amd64 entry (an entry without platform counts when it is the only one).
    pub fn select_linux_amd64(&self) -> Result<&Descriptor, SpecError> {
        let found = self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        });
        if let Some(d) = found {
            return Ok(d);
        }
        if let [only] = self.manifests.as_slice() {
            if only.platform.is_none() && is_manifest_type(&only.media_type) {
                return Ok(only);
            }
        }
        let list: Vec<String> = self
            .manifests
            .iter()
            .map(|d| {
                d.platform
                    .as_ref()
                    .map_or("unknown".into(), |p| format!("{}/{}", p.os, p.architecture))
            })
            .collect();
        Err(SpecError::NoPlatform(list.join(", ")))
    }
}

/// Runtime part of an image config (Docker's capitalised field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// User to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports (`"8080/tcp": {}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Environment, `KEY=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// Layer list of a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers.
    pub diff_ids: Vec<Digest>,
}

/// An image config (the blob whose digest is the image id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Runtime defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// Layers.
    #[serde(default)]
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// The image's user split as CRI wants it: a numeric uid, or a user name (group part dropped).
    pub fn cri_user(&self) -> (Option<i64>, Option<String>) {
        let user = self
            .config
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .unwrap_or("");
        let user = user.split(':').next().unwrap_or("");
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), None),
            Err(_) if user.is_empty() => (None, None),
            Err(_) => (None, Some(user.to_string())),
        }
    }
}

/// True for manifest media types (not indexes).
pub fn is_manifest_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// True for index media types.
pub fn is_index_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

/// Whether a layer is gzip-compressed, from its media type.
pub fn layer_is_gzip(mt: &str) -> Result<bool, SpecError> {
    match mt {
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(true),
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Ok(false),
        other => Err(SpecError::UnsupportedLayer(other.to_string())),
    }
}

/// A parsed top-level manifest document.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    /// A single-platform manifest.
    Manifest(Manifest),
    /// A multi-platform index.
    Index(Index),
}

/// Parses a manifest or index; `media_type` comes from Content-Type (falls back to the document's own).
pub fn parse_manifest(data: &[u8], media_type: Option<&str>) -> Result<ManifestDoc, SpecError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        schema_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(data).map_err(|source| SpecError::Json {
        what: "manifest",
        source,
    })?;
    let header = media_type.filter(|m| is_manifest_type(m) || is_index_type(m));
    let mt = header
        .map(str::to_string)
        .or(probe.media_type)
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if probe.schema_version == Some(1) {
        return Err(SpecError::UnsupportedMediaType("docker schema 1".into()));
    }
    if is_index_type(&mt) {
        serde_json::from_slice(data)
            .map(ManifestDoc::Index)
            .map_err(|source| SpecError::Json {
                what: "image index",
                source,
            })
    } else if is_manifest_type(&mt) {
        serde_json::from_slice(data)
            .map(ManifestDoc::Manifest)
            .map_err(|source| SpecError::Json {
                what: "image manifest",
                source,
            })
    } else {
        Err(SpecError::UnsupportedMediaType(mt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn picks_amd64_from_index() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d(1),
            d(2)
        );
        let ManifestDoc::Index(idx) = parse_manifest(json.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(idx.select_linux_amd64().unwrap().size, 2);
        let only_arm = Index {
            manifests: idx.manifests[..1].to_vec(),
            ..idx
        };
        assert!(
            matches!(only_arm.select_linux_amd64(), Err(SpecError::NoPlatform(p)) if p == "linux/arm64")
        );
    }

    #[test]
    fn parses_oci_manifest_without_media_type() {
        let json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},"layers":[]}}"#,
            d(3)
        );
        assert!(matches!(
            parse_manifest(json.as_bytes(), None).unwrap(),
            ManifestDoc::Manifest(_)
        ));
        assert!(matches!(
            parse_manifest(b"{", None),
            Err(SpecError::Json { .. })
        ));
        assert!(matches!(
            parse_manifest(b"{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}", None),
            Err(SpecError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn cri_user_split() {
        let with = |u: &str| ImageConfig {
            config: Some(ContainerConfig {
                user: Some(u.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(with("1000:1000").cri_user(), (Some(1000), None));
        assert_eq!(with("nobody").cri_user(), (None, Some("nobody".into())));
        assert_eq!(with("").cri_user(), (None, None));
        assert_eq!(ImageConfig::default().cri_user(), (None, None));
    }

    #[test]
    fn layer_types() {
        assert!(layer_is_gzip(OCI_LAYER_GZIP).unwrap());
        assert!(!layer_is_gzip(DOCKER_LAYER_TAR).unwrap());
        assert!(layer_is_gzip("application/vnd.oci.image.layer.v1.tar+zstd").is_err());
    }
}
