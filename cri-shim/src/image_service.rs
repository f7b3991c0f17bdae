//! CRI `ImageService` over the [`images::Store`].
//!
//! - **Ids.** An image's id is its config digest (`sha256:…`); `PullImage` returns it as `image_ref`,
//!   and `ListImages`/`ImageStatus` report the same string as `id` and `spec.image`.
//! - **Lookups** (`ImageStatus`, `ListImages` filter, `RemoveImage`) accept a tag (`busybox`,
//!   `127.0.0.1:5000/x:1`), a repo digest (`repo@sha256:…`), the full id with or without `sha256:`, or
//!   a unique id prefix of at least 12 hex digits. An absent image is `image: None` (status), an empty
//!   list, or a successful no-op (remove).
//! - **Remove** by tag drops that tag while the image has others; by id or digest (or the last tag) the
//!   image goes, with its block image and the blobs no other image shares.
//! - **Pull** authenticates with the CRI `AuthConfig` (`username`/`password`, or `auth` =
//!   base64 `user:password`) for the image's registry, verifies every blob, then builds the image's
//!   read-only ext4 block image right away, so the first container start does not pay for it
//!   (`mkfs.ext4` of busybox takes tens of milliseconds; a pod start waits on it otherwise).
//!   A `registry_token` is sent as the bearer token as it is; `identity_token` (an OAuth2 refresh
//!   token to exchange at the token server) is refused with `UNIMPLEMENTED`.
//! - **Errors** map to specific codes: malformed reference or auth → `INVALID_ARGUMENT`; rejected
//!   credentials → `UNAUTHENTICATED`; manifest or blob missing on the registry → `NOT_FOUND`;
//!   registry unreachable → `UNAVAILABLE`; corrupt download → `DATA_LOSS`; unsupported image format
//!   → `FAILED_PRECONDITION`; store I/O → `INTERNAL`.
//! - **ImageFsInfo** reports the store's allocated bytes and inodes (a walk of the store directory),
//!   with the store root as `fs_id.mountpoint`.
//!
//! All store work runs in `spawn_blocking`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use images::auth::Credentials;
use images::block::BlockError;
use images::progress::Progress;
use images::pull::PullError;
use images::reference::{Reference, ReferenceError};
use images::registry::{RegistryClient, RegistryConfig, RegistryError};
use images::store::{ImageRecord, Store, StoreError};
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::{
    AuthConfig, FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest,
    ImageFsInfoResponse, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};
use tonic::{Request, Response, Status};

/// How the image service reaches registries.
#[derive(Debug, Clone, Default)]
pub struct ImageServiceOptions {
    /// Registries (`host:port`) spoken to over plain HTTP (loopback registries fall back to HTTP anyway).
    pub plain_http: Vec<String>,
    /// An extra trusted CA certificate (PEM file) for HTTPS registries.
    pub extra_ca: Option<PathBuf>,
    /// Mirrors, per-host credentials and CAs (`--registries-config`).
    pub registries: crate::registries::Registries,
}

/// Errors of the image service, each mapped to a specific gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ImageServiceError {
    /// The request names no image.
    #[error("no image given (ImageSpec.image is empty)")]
    NoImage,
    /// The image reference does not parse.
    #[error("invalid image reference {image:?}")]
    BadReference {
        /// The reference as given.
        image: String,
        /// Why.
        #[source]
        source: ReferenceError,
    },
    /// The `AuthConfig` is malformed.
    #[error("invalid AuthConfig: {0}")]
    BadAuth(String),
    /// An `AuthConfig` field kennel does not support.
    #[error("AuthConfig.{0} is not supported (use username and password, or auth)")]
    UnsupportedAuth(&'static str),
    /// The extra CA file cannot be read.
    #[error("reading the extra registry CA {path}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Building the registry client failed.
    #[error("registry client")]
    Client(#[source] RegistryError),
    /// Pulling failed.
    #[error("pulling {image}")]
    Pull {
        /// The reference pulled.
        image: String,
        /// Cause.
        #[source]
        source: PullError,
    },
    /// Building the image's block image failed.
    #[error("building the block image of {image}")]
    Block {
        /// The image id.
        image: String,
        /// Cause.
        #[source]
        source: BlockError,
    },
    /// The store failed.
    #[error("image store")]
    Store(#[from] StoreError),
    /// A blocking task died.
    #[error("image store task failed: {0}")]
    Task(String),
}

impl ImageServiceError {
    /// The gRPC code for this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::NoImage | Self::BadReference { .. } | Self::BadAuth(_) => Code::InvalidArgument,
            Self::UnsupportedAuth(_) => Code::Unimplemented,
            Self::Ca { .. } | Self::Client(_) => Code::FailedPrecondition,
            Self::Pull { source, .. } => pull_code(source),
            Self::Block { source, .. } => match source {
                BlockError::NoMkfs(_) => Code::FailedPrecondition,
                BlockError::Unpack(_) => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            Self::Store(StoreError::NotFound(_)) => Code::NotFound,
            Self::Store(_) | Self::Task(_) => Code::Internal,
        }
    }
}

fn pull_code(e: &PullError) -> tonic::Code {
    use tonic::Code;
    match e {
        PullError::Reference(_) => Code::InvalidArgument,
        PullError::Registry(r) => match r {
            RegistryError::Unauthorized { .. } => Code::Unauthenticated,
            RegistryError::Token { .. } => Code::Unauthenticated,
            RegistryError::NotFound(_) => Code::NotFound,
            RegistryError::Http { .. } => Code::Unavailable,
            RegistryError::Digest(_) => Code::DataLoss,
            RegistryError::ManifestTooLarge(_) => Code::FailedPrecondition,
            RegistryError::Config(_) => Code::FailedPrecondition,
            RegistryError::Status { status, .. } => match status.as_u16() {
                403 => Code::PermissionDenied,
                404 => Code::NotFound,
                429 => Code::ResourceExhausted,
                s if s >= 500 => Code::Unavailable,
                _ => Code::Unknown,
            },
            _ => Code::Internal,
        },
        PullError::Spec(_) | PullError::Layout(_) => Code::FailedPrecondition,
        PullError::Store(StoreError::Digest(_)) => Code::DataLoss,
        PullError::Store(_) | PullError::Task(_) => Code::Internal,
    }
}

/// The whole error chain on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<ImageServiceError> for Status {
    fn from(e: ImageServiceError) -> Self {
        Status::new(e.code(), chain(&e))
    }
}

/// The CRI image service. Register with `ImageServiceServer::new(ImageServiceImpl::new(..))`.
#[derive(Debug)]
pub struct ImageServiceImpl {
    store: Arc<Store>,
    opts: ImageServiceOptions,
    /// Client for anonymous pulls, kept so registry bearer tokens are reused.
    anonymous: Mutex<Option<RegistryClient>>,
}

/// The image a request names: `ImageSpec.image`, trimmed, non-empty.
fn spec_image(spec: Option<&ImageSpec>) -> Result<String, ImageServiceError> {
    let image = spec.map(|s| s.image.trim()).unwrap_or("");
    if image.is_empty() {
        return Err(ImageServiceError::NoImage);
    }
    Ok(image.to_string())
}

/// True when `image` reads as an image id or id prefix (`sha256:…` or ≥ 12 hex digits).
fn looks_like_id(image: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    (image.starts_with("sha256:") || hex.len() >= 12)
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the image `image` names (tag, repo digest, id or id prefix) in the store; `None` when absent.
/// A string that is neither an id nor a valid reference is an error.
pub fn image_ref_for(store: &Store, image: &str) -> Result<Option<ImageRecord>, ImageServiceError> {
    let image = image.trim();
    if image.is_empty() {
        return Err(ImageServiceError::NoImage);
    }
    if !looks_like_id(image) {
        image
            .parse::<Reference>()
            .map_err(|source| ImageServiceError::BadReference {
                image: image.to_string(),
                source,
            })?;
    }
    Ok(store.resolve(image)?)
}

/// The CRI view of an image record.
pub fn cri_image(store: &Store, rec: &ImageRecord) -> Result<Image, ImageServiceError> {
    let (uid, username) = store.config(rec)?.cri_user();
    let id = rec.id.to_string();
    Ok(Image {
        id: id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size,
        uid: uid.map(|value| Int64Value { value }),
        username: username.unwrap_or_default(),
        spec: Some(ImageSpec {
            image: id,
            ..Default::default()
        }),
        pinned: false,
    })
}

/// The verbose `info` of `ImageStatus`: `{"info": <json>}` with manifest, config and block image.
fn verbose_info(
    store: &Store,
    rec: &ImageRecord,
) -> Result<HashMap<String, String>, ImageServiceError> {
    let config = store.config(rec)?;
    let block = store.block_path(rec);
    let info = serde_json::json!({
        "id": rec.id.to_string(),
        "manifestDigest": rec.manifest_digest.to_string(),
        "manifestMediaType": rec.manifest_media_type,
        "layers": rec.layers.iter().map(|l| serde_json::json!({
            "digest": l.digest.to_string(),
            "mediaType": l.media_type,
            "size": l.size,
        })).collect::<Vec<_>>(),
        "imageSpec": config,
        "blockImage": block.is_file().then(|| block.display().to_string()),
    });
    Ok(HashMap::from([("info".to_string(), info.to_string())]))
}

/// How a pull authenticates, from a CRI `AuthConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAuth {
    /// User name and password (basic auth, or for the registry's token server).
    Basic(Credentials),
    /// A bearer token sent to the registry as it is (`registry_token`).
    Token(String),
}

/// Credentials from a CRI `AuthConfig`: `None` when it carries none.
pub fn credentials(auth: Option<&AuthConfig>) -> Result<Option<PullAuth>, ImageServiceError> {
    let Some(a) = auth else { return Ok(None) };
    if !a.registry_token.is_empty() {
        return Ok(Some(PullAuth::Token(a.registry_token.clone())));
    }
    if !a.identity_token.is_empty() {
        return Err(ImageServiceError::UnsupportedAuth("identity_token"));
    }
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(Some(PullAuth::Basic(Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
        })));
    }
    if a.auth.is_empty() {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a.auth.trim())
        .map_err(|e| ImageServiceError::BadAuth(format!("auth is not base64: {e}")))?;
    let raw = String::from_utf8(raw)
        .map_err(|_| ImageServiceError::BadAuth("auth is not UTF-8".into()))?;
    let (username, password) = raw
        .split_once(':')
        .ok_or_else(|| ImageServiceError::BadAuth("auth is not base64 of user:password".into()))?;
    Ok(Some(PullAuth::Basic(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageServiceError> + Send + 'static,
) -> Result<T, ImageServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageServiceError::Task(e.to_string()))?
}

impl ImageServiceImpl {
    /// An image service over `store`.
    pub fn new(store: Arc<Store>, opts: ImageServiceOptions) -> Self {
        Self {
            store,
            opts,
            anonymous: Mutex::new(None),
        }
    }

    /// The store served.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn client(
        &self,
        registry: &str,
        creds: Option<PullAuth>,
    ) -> Result<RegistryClient, ImageServiceError> {
        if creds.is_none() {
            if let Some(c) = self
                .anonymous
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                return Ok(c.clone());
            }
        }
        let reg = &self.opts.registries;
        let mut cfg = RegistryConfig {
            plain_http: [self.opts.plain_http.clone(), reg.plain_http()].concat(),
            credentials: reg.credentials.clone(),
            ca_pem: reg.ca_pem.clone(),
            ..Default::default()
        };
        if let Some(path) = &self.opts.extra_ca {
            let pem = std::fs::read(path).map_err(|source| ImageServiceError::Ca {
                path: path.clone(),
                source,
            })?;
            cfg.ca_pem.push(pem);
        }
        let anonymous = creds.is_none();
        match creds {
            Some(PullAuth::Basic(c)) => {
                cfg.credentials.insert(registry.to_string(), c);
            }
            Some(PullAuth::Token(t)) => {
                cfg.tokens.insert(registry.to_string(), t);
            }
            None => {}
        }
        let client = RegistryClient::new(cfg).map_err(ImageServiceError::Client)?;
        if anonymous {
            *self.anonymous.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        }
        Ok(client)
    }

    /// Pulls `image` and builds its block image; returns the image record.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<ImageRecord, ImageServiceError> {
        let reference: Reference =
            image
                .parse()
                .map_err(|source| ImageServiceError::BadReference {
                    image: image.to_string(),
                    source,
                })?;
        let creds = credentials(auth)?;
        let started = std::time::Instant::now();
        let mut rec = None;
        for source in self.opts.registries.sources(&reference.registry) {
            // The pod's credentials are for the image's registry; a mirror uses its own
            // (from the registries config).
            let (host, creds) = match &source {
                Some(m) => (m.as_str(), None),
                None => (reference.registry.as_str(), creds.clone()),
            };
            let client = self.client(host, creds)?;
            match self
                .store
                .pull_from(&client, image, source.as_deref(), &Progress::hidden())
                .await
            {
                Ok(r) => {
                    rec = Some(Ok(r));
                    break;
                }
                Err(e) if source.is_some() => {
                    tracing::warn!(image, mirror = host, error = %e, "mirror failed, trying the next source");
                }
                Err(e) => rec = Some(Err(e)),
            }
        }
        let rec = rec
            .expect("sources() ends with the registry itself")
            .map_err(|source| ImageServiceError::Pull {
                image: image.to_string(),
                source,
            })?;
        let pulled = started.elapsed();
        let store = self.store.clone();
        let r = rec.clone();
        let block = blocking(move || {
            store
                .block_image(&r)
                .map_err(|source| ImageServiceError::Block {
                    image: r.id.to_string(),
                    source,
                })
        })
        .await?;
        tracing::info!(
            image,
            id = %rec.id,
            pull_ms = pulled.as_millis() as u64,
            block_built = block.built,
            total_ms = started.elapsed().as_millis() as u64,
            "pulled image"
        );
        Ok(rec)
    }
}

#[tonic::async_trait]
impl ImageService for ImageServiceImpl {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image.trim().to_string())
            .filter(|s| !s.is_empty());
        let store = self.store.clone();
        let images = blocking(move || {
            let recs = match filter {
                Some(f) => image_ref_for(&store, &f)?.into_iter().collect(),
                None => store.list()?,
            };
            recs.iter().map(|r| cri_image(&store, r)).collect()
        })
        .await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let image = spec_image(req.image.as_ref())?;
        let store = self.store.clone();
        let resp = blocking(move || {
            let Some(rec) = image_ref_for(&store, &image)? else {
                return Ok(ImageStatusResponse::default());
            };
            let info = if req.verbose {
                verbose_info(&store, &rec)?
            } else {
                HashMap::new()
            };
            Ok(ImageStatusResponse {
                image: Some(cri_image(&store, &rec)?),
                info,
            })
        })
        .await?;
        Ok(Response::new(resp))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let image = spec_image(req.image.as_ref())?;
        let rec = self
            .pull(&image, req.auth.as_ref())
            .await
            .inspect_err(|e| {
                tracing::warn!(image, error = %chain(e), "pull failed");
            })?;
        Ok(Response::new(PullImageResponse {
            image_ref: rec.id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let image = spec_image(request.into_inner().image.as_ref())?;
        let store = self.store.clone();
        blocking(move || {
            if image_ref_for(&store, &image)?.is_none() {
                return Ok(());
            }
            match store.remove(&image) {
                Ok(removed) => {
                    tracing::info!(image, ?removed, "removed image");
                    Ok(())
                }
                // removed concurrently: still idempotent
                Err(StoreError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let store = self.store.clone();
        let usage = blocking(move || Ok(store.disk_usage()?)).await?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let fs = FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.store.root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: vec![],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(f: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
        let mut a = AuthConfig::default();
        f(&mut a);
        a
    }

    #[test]
    fn credentials_from_auth_config() {
        assert_eq!(credentials(None).unwrap(), None);
        assert_eq!(credentials(Some(&AuthConfig::default())).unwrap(), None);
        let basic = |u: &str, p: &str| {
            Some(PullAuth::Basic(Credentials {
                username: u.into(),
                password: p.into(),
            }))
        };
        let c = credentials(Some(&auth(|a| {
            a.username = "u".into();
            a.password = "p:w".into();
        })))
        .unwrap();
        assert_eq!(c, basic("u", "p:w"));
        // base64("alice:s3cr:et")
        let c = credentials(Some(&auth(|a| a.auth = "YWxpY2U6czNjcjpldA==".into()))).unwrap();
        assert_eq!(c, basic("alice", "s3cr:et"));
        for bad in ["!!!", "bm9jb2xvbg=="] {
            let e = credentials(Some(&auth(|a| a.auth = bad.into()))).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e}");
        }
        let c = credentials(Some(&auth(|a| a.registry_token = "t".into()))).unwrap();
        assert_eq!(c, Some(PullAuth::Token("t".into())));
        let e = credentials(Some(&auth(|a| a.identity_token = "t".into()))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.to_string().contains("identity_token"));
    }

    #[test]
    fn ids_and_references() {
        assert!(looks_like_id("sha256:abc"));
        assert!(looks_like_id("0123456789ab"));
        assert!(!looks_like_id("0123456789a"));
        assert!(!looks_like_id("busybox"));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(image_ref_for(&store, "busybox").unwrap().is_none());
        assert!(image_ref_for(&store, "0123456789abcdef").unwrap().is_none());
        let e = image_ref_for(&store, "Bad Name!").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            image_ref_for(&store, " ").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn errors_map_to_specific_codes() {
        let pull = |source| ImageServiceError::Pull {
            image: "x".into(),
            source,
        };
        let cases = [
            (
                pull(PullError::Registry(RegistryError::Unauthorized {
                    url: "u".into(),
                })),
                tonic::Code::Unauthenticated,
            ),
            (
                pull(PullError::Registry(RegistryError::NotFound("m".into()))),
                tonic::Code::NotFound,
            ),
            (
                pull(PullError::Reference(ReferenceError::Empty)),
                tonic::Code::InvalidArgument,
            ),
            (
                pull(PullError::Layout("nested".into())),
                tonic::Code::FailedPrecondition,
            ),
            (
                ImageServiceError::Store(StoreError::NotFound("x".into())),
                tonic::Code::NotFound,
            ),
            (ImageServiceError::NoImage, tonic::Code::InvalidArgument),
            (
                ImageServiceError::Task("panicked".into()),
                tonic::Code::Internal,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }

    #[test]
    fn status_messages_carry_the_chain() {
        let e = ImageServiceError::Pull {
            image: "x".into(),
            source: PullError::Registry(RegistryError::NotFound("manifest x:latest".into())),
        };
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "pulling x: not found: manifest x:latest");
    }
}
