//! OCI distribution client: ping, auth (anonymous, basic, bearer), manifests and blobs (pull and push).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};

use futures_util::StreamExt as _;
use indicatif::ProgressBar;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt as _;

use crate::auth::{parse_challenge, Challenge, Credentials, TokenResponse};
use crate::digest::{Digest, DigestError, Hasher};
use crate::spec::{Descriptor, MANIFEST_ACCEPT};

/// Largest manifest accepted (bytes).
pub const MAX_MANIFEST: usize = 4 << 20;

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Transport failure (connect, TLS, timeout).
    #[error("request to {url} failed")]
    Http {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry refused our credentials (or we had none).
    #[error("unauthorized at {url} (check the registry credentials)")]
    Unauthorized {
        /// The URL.
        url: String,
    },
    /// Manifest or blob missing.
    #[error("not found: {0}")]
    NotFound(String),
    /// Unexpected status.
    #[error("{method} {url} returned {status}: {body}")]
    Status {
        /// Method.
        method: Method,
        /// The URL.
        url: String,
        /// Status.
        status: StatusCode,
        /// Start of the body.
        body: String,
    },
    /// Token endpoint misbehaved.
    #[error("token request to {realm} failed: {reason}")]
    Token {
        /// Realm URL.
        realm: String,
        /// What went wrong.
        reason: String,
    },
    /// Content failed verification.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Manifest too large.
    #[error("manifest at {0} exceeds {MAX_MANIFEST} bytes")]
    ManifestTooLarge(String),
    /// Local file error while downloading.
    #[error("writing download: {0}")]
    Io(#[from] std::io::Error),
    /// Bad TLS / client configuration.
    #[error("client configuration: {0}")]
    Config(String),
    /// Upload location header missing or malformed.
    #[error("registry returned no usable upload location for {0}")]
    Location(String),
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Credentials per registry host (`127.0.0.1:5000`).
    pub credentials: HashMap<String, Credentials>,
    /// Bearer tokens per registry host, sent as they are (`Authorization: Bearer …`) instead of
    /// asking a token server: a CRI `registry_token` from a credential provider.
    pub tokens: HashMap<String, String>,
    /// Hosts spoken to over plain HTTP. Loopback hosts fall back to HTTP when HTTPS fails to connect.
    pub plain_http: Vec<String>,
    /// Extra trusted root certificates (PEM) for HTTPS registries.
    pub ca_pem: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
struct HostState {
    base: Option<String>,
    challenge: Option<Challenge>,
    tokens: HashMap<String, String>,
}

/// A registry client shared across pulls (cheap to clone).
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    cfg: Arc<RegistryConfig>,
    hosts: Arc<Mutex<HashMap<String, HostState>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another crate may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

/// A URL whose path is `/v2/...` on the registry host.
fn api_host(registry: &str) -> &str {
    if registry == crate::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

async fn body_snippet(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    text.chars()
        .take(300)
        .collect::<String>()
        .trim()
        .to_string()
}

impl RegistryClient {
    /// Builds a client.
    pub fn new(cfg: RegistryConfig) -> Result<Self, RegistryError> {
        install_crypto_provider();
        let mut certs = Vec::new();
        for pem in &cfg.ca_pem {
            certs.push(
                reqwest::Certificate::from_pem(pem)
                    .map_err(|e| RegistryError::Config(format!("CA certificate: {e}")))?,
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("kennel-images/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        Ok(Self {
            http,
            cfg: Arc::new(cfg),
            hosts: Arc::default(),
        })
    }

    fn host_state(&self, host: &str) -> HostState {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
            .unwrap_or_default()
    }

    fn update_host(&self, host: &str, f: impl FnOnce(&mut HostState)) {
        f(self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_string())
            .or_default())
    }

    /// Finds the base URL (`https://host` or `http://host`) by pinging `/v2/`; records the auth challenge.
    async fn base(&self, registry: &str) -> Result<String, RegistryError> {
        if let Some(b) = self.host_state(registry).base {
            return Ok(b);
        }
        let host = api_host(registry);
        let schemes: &[&str] = if self.cfg.plain_http.iter().any(|h| h == registry) {
            &["http"]
        } else if is_loopback(host) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for scheme in schemes {
            let base = format!("{scheme}://{host}");
            let url = format!("{base}/v2/");
            match self.http.get(&url).send().await {
                Ok(resp) => {
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    self.update_host(registry, |s| {
                        s.base = Some(base.clone());
                        s.challenge = challenge;
                    });
                    return Ok(base);
                }
                Err(source) => last = Some(RegistryError::Http { url, source }),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Config(format!("no scheme for {registry}"))))
    }

    async fn token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let mut params = vec![("scope", scope)];
        if let Some(s) = service {
            params.push(("service", s));
        }
        let url =
            reqwest::Url::parse_with_params(realm, &params).map_err(|e| RegistryError::Token {
                realm: realm.to_string(),
                reason: format!("bad realm URL: {e}"),
            })?;
        let mut req = self.http.get(url);
        if let Some(c) = self.cfg.credentials.get(registry) {
            req = req.header(AUTHORIZATION, c.basic_header());
        }
        let err = |reason: String| RegistryError::Token {
            realm: realm.to_string(),
            reason,
        };
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                url: realm.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(err(format!("status {}", resp.status())));
        }
        let body: TokenResponse = resp.json().await.map_err(|e| err(e.to_string()))?;
        body.into_token()
            .ok_or_else(|| err("no token in response".into()))
    }

    async fn auth_header(
        &self,
        registry: &str,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        if let Some(t) = self.cfg.tokens.get(registry) {
            return Ok(Some(format!("Bearer {t}")));
        }
        let st = self.host_state(registry);
        match st.challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .cfg
                .credentials
                .get(registry)
                .map(Credentials::basic_header)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(t) = st.tokens.get(scope) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self
                    .token(registry, &realm, service.as_deref(), scope)
                    .await?;
                self.update_host(registry, |s| {
                    s.tokens.insert(scope.to_string(), t.clone());
                });
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Sends a request built by `build(base_url)`, authenticating and retrying once on 401.
    async fn send(
        &self,
        registry: &str,
        scope: &str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let base = self.base(registry).await?;
        for attempt in 0..2 {
            let mut req = build(&self.http, &base);
            if let Some(h) = self.auth_header(registry, scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let req = req
                .build()
                .map_err(|e| RegistryError::Config(e.to_string()))?;
            let url = req.url().to_string();
            let resp = self
                .http
                .execute(req)
                .await
                .map_err(|source| RegistryError::Http {
                    url: url.clone(),
                    source,
                })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            let had = self.host_state(registry);
            let changed = challenge.is_some() && challenge != had.challenge;
            if attempt == 1 || !(changed || had.tokens.contains_key(scope)) {
                return Err(RegistryError::Unauthorized { url });
            }
            self.update_host(registry, |s| {
                if challenge.is_some() {
                    s.challenge = challenge;
                }
                s.tokens.remove(scope);
            });
        }
        Err(RegistryError::Unauthorized { url: base })
    }

    async fn check(
        resp: reqwest::Response,
        method: Method,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(what.to_string()));
        }
        let url = resp.url().to_string();
        Err(RegistryError::Status {
            method,
            url,
            status,
            body: body_snippet(resp).await,
        })
    }

    /// Fetches a manifest or index by tag or digest: `(bytes, media type, digest)`.
    /// A digest reference is verified; a tag response is checked against `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>, Digest), RegistryError> {
        let scope = format!("repository:{repo}:pull");
        let resp = self
            .send(registry, &scope, |c, base| {
                c.get(format!("{base}/v2/{repo}/manifests/{reference}"))
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = Self::check(
            resp,
            Method::GET,
            &format!("manifest {registry}/{repo}:{reference}"),
        )
        .await?;
        let url = resp.url().to_string();
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?;
            if body.len() + chunk.len() > MAX_MANIFEST {
                return Err(RegistryError::ManifestTooLarge(url));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = Digest::of(&body);
        if let Ok(expected) = reference.parse::<Digest>() {
            expected.verify(&body)?;
        } else if let Some(expected) = header_digest {
            expected.verify(&body)?;
        }
        Ok((body, media_type, digest))
    }

    /// Downloads a blob into `out`, verifying size and digest; `progress` advances per chunk.
    pub async fn get_blob(
        &self,
        registry: &str,
        repo: &str,
        desc: &Descriptor,
        out: &mut tokio::fs::File,
        progress: Option<&ProgressBar>,
    ) -> Result<u64, RegistryError> {
        let scope = format!("repository:{repo}:pull");
        let digest = &desc.digest;
        let resp = self
            .send(registry, &scope, |c, base| {
                c.get(format!("{base}/v2/{repo}/blobs/{digest}"))
            })
            .await?;
        let resp = Self::check(
            resp,
            Method::GET,
            &format!("blob {digest} in {registry}/{repo}"),
        )
        .await?;
        let url = resp.url().to_string();
        let mut hasher = Hasher::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?;
            hasher.update(&chunk);
            if hasher.len() > desc.size {
                break;
            }
            out.write_all(&chunk).await?;
            if let Some(p) = progress {
                p.inc(chunk.len() as u64);
            }
        }
        out.flush().await?;
        let n = hasher.len();
        hasher.verify(digest, Some(desc.size))?;
        Ok(n)
    }

    /// True when the repository already has the blob.
    pub async fn blob_exists(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let scope = format!("repository:{repo}:pull,push");
        let resp = self
            .send(registry, &scope, |c, base| {
                c.head(format!("{base}/v2/{repo}/blobs/{digest}"))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Self::check(resp, Method::HEAD, &format!("blob {digest}"))
                .await
                .map(|_| false),
        }
    }

    /// Uploads a blob (monolithic: POST then PUT) unless the registry already has it.
    pub async fn push_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        data: Vec<u8>,
    ) -> Result<(), RegistryError> {
        digest.verify(&data)?;
        if self.blob_exists(registry, repo, digest).await? {
            return Ok(());
        }
        let scope = format!("repository:{repo}:pull,push");
        let resp = self
            .send(registry, &scope, |c, base| {
                c.post(format!("{base}/v2/{repo}/blobs/uploads/"))
            })
            .await?;
        let resp = Self::check(resp, Method::POST, &format!("upload session in {repo}")).await?;
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Location(repo.to_string()))?;
        let loc = resp
            .url()
            .join(loc)
            .map_err(|_| RegistryError::Location(repo.to_string()))?;
        let sep = if loc.query().is_some() { '&' } else { '?' };
        let put_url = format!("{loc}{sep}digest={digest}");
        let resp = self
            .send(registry, &scope, |c, _| {
                c.put(&put_url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.clone())
            })
            .await?;
        Self::check(resp, Method::PUT, &format!("blob upload {digest}")).await?;
        Ok(())
    }

    /// Uploads a manifest under `reference` (tag or digest).
    pub async fn put_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: Vec<u8>,
    ) -> Result<Digest, RegistryError> {
        let scope = format!("repository:{repo}:pull,push");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|e| RegistryError::Config(e.to_string()))?,
        );
        let digest = Digest::of(&data);
        let resp = self
            .send(registry, &scope, |c, base| {
                c.put(format!("{base}/v2/{repo}/manifests/{reference}"))
                    .headers(headers.clone())
                    .body(data.clone())
            })
            .await?;
        Self::check(resp, Method::PUT, &format!("manifest {repo}:{reference}")).await?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("registry.example:5000"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
    }
}
