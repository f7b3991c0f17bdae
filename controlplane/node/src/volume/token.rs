//! Kubelet's ServiceAccount token manager (`pkg/kubelet/token`): projected
//! `serviceAccountToken` sources get a token from the TokenRequest API
//! (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`, `authentication.k8s.io/v1`),
//! bound to the pod, cached per (namespace, ServiceAccount, audiences, expiry, pod) and requested
//! again once 80 % of its lifetime has passed or it is 24 h old (each with up to 10 s of jitter).
//! A failed refresh keeps serving the cached token until it expires, as kubelet does.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

/// Kubelet's `maxTTL`: a token older than this is refreshed whatever its lifetime.
pub const MAX_TTL: Duration = Duration::hours(24);
/// Kubelet's `maxJitter`.
pub const MAX_JITTER_SECS: i64 = 10;
/// After a failed request, how long [`TokenManager::refresh_due`] waits before saying a refresh
/// is due again (so a worker pass every second does not hammer the API).
pub const RETRY_AFTER_FAILURE: Duration = Duration::seconds(10);
/// The API's default `expirationSeconds` of a projection (`SetDefaults_ServiceAccountTokenProjection`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Errors getting a token (the text after `MountVolume.SetUp failed for volume "<v>" : `).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The first request for this token failed.
    #[error("failed to fetch token: {0}")]
    Fetch(String),
    /// A refresh failed and the cached token has expired.
    #[error("token {key} expired and refresh failed: {cause}")]
    Expired {
        /// The cache key.
        key: String,
        /// The API error.
        cause: String,
    },
    /// The API answered without a token or expiry.
    #[error("failed to fetch token: the TokenRequest response has no {0}")]
    Incomplete(&'static str),
}

/// What a token is requested for; equal keys share one cached token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// Requested audiences (empty: the API server's default).
    pub audiences: Vec<String>,
    /// Requested lifetime.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// Its uid.
    pub pod_uid: String,
}

impl std::fmt::Display for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}/{:?}/{:?}/{}/{}",
            self.service_account,
            self.namespace,
            self.audiences,
            self.expiration_seconds,
            self.pod_uid
        )
    }
}

impl TokenKey {
    /// The TokenRequest this key asks for (bound to the pod).
    pub fn request(&self) -> TokenRequest {
        TokenRequest {
            spec: TokenRequestSpec {
                audiences: self.audiences.clone(),
                expiration_seconds: Some(self.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod_name.clone()),
                    uid: Some(self.pod_uid.clone()),
                }),
            },
            ..Default::default()
        }
    }
}

/// A token as the API issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// `status.expirationTimestamp`.
    pub expires: DateTime<Utc>,
    /// The lifetime the API granted (`spec.expirationSeconds` of the answer).
    pub expiration_seconds: i64,
}

impl IssuedToken {
    fn from_response(tr: TokenRequest, asked: i64) -> Result<Self, TokenError> {
        let status = tr.status.ok_or(TokenError::Incomplete("status"))?;
        if status.token.is_empty() {
            return Err(TokenError::Incomplete("token"));
        }
        Ok(IssuedToken {
            token: status.token,
            expires: to_chrono(status.expiration_timestamp.0),
            expiration_seconds: tr.spec.expiration_seconds.unwrap_or(asked),
        })
    }
}

fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Kubelet's `requiresRefresh`: the token is older than 24 h, or less than 20 % of its lifetime
/// is left (both moved earlier by `jitter`).
pub fn requires_refresh(now: DateTime<Utc>, t: &IssuedToken, jitter: Duration) -> bool {
    let lifetime = Duration::seconds(t.expiration_seconds);
    let issued = t.expires - lifetime;
    if now > issued + MAX_TTL - jitter {
        return true;
    }
    now > t.expires - Duration::seconds(t.expiration_seconds * 20 / 100) - jitter
}

fn jitter() -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::milliseconds((r % (MAX_JITTER_SECS as u64 * 1000)) as i64)
}

/// Where tokens come from: the TokenRequest API (a [`kube::Client`]), or a stand-in in tests.
pub trait TokenRequester: Send + Sync {
    /// `POST .../namespaces/<ns>/serviceaccounts/<sa>/token`; the error is the API's message.
    fn request(
        &self,
        namespace: &str,
        service_account: &str,
        tr: &TokenRequest,
    ) -> impl Future<Output = Result<TokenRequest, String>> + Send;
}

impl TokenRequester for kube::Client {
    async fn request(
        &self,
        namespace: &str,
        service_account: &str,
        tr: &TokenRequest,
    ) -> Result<TokenRequest, String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.clone(), namespace);
        api.create_subresource("token", service_account, &PostParams::default(), tr)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if !s.message.is_empty() => s.message,
                other => other.to_string(),
            })
    }
}

/// The token cache shared by every pod worker of the node (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TokenManager {
    cache: Arc<Mutex<HashMap<TokenKey, IssuedToken>>>,
    failed: Arc<Mutex<HashMap<TokenKey, DateTime<Utc>>>>,
}

/// The tokens of one pod's projections: (volume name, file path) → token.
pub type PodTokens = BTreeMap<(String, String), String>;

/// Every `serviceAccountToken` projection of the pod: (volume, path, what to request).
pub fn token_sources(pod: &Pod) -> Vec<(String, String, TokenKey)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sa = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.service_account.clone().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "default".into());
    let mut out = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let sources = v.projected.iter().flat_map(|p| p.sources.iter().flatten());
        for t in sources.filter_map(|s| s.service_account_token.as_ref()) {
            let key = TokenKey {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                service_account: sa.clone(),
                audiences: t
                    .audience
                    .clone()
                    .filter(|a| !a.is_empty())
                    .into_iter()
                    .collect(),
                expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            };
            out.push((v.name.clone(), t.path.clone(), key));
        }
    }
    out
}

impl TokenManager {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn cached(&self, key: &TokenKey) -> Option<IssuedToken> {
        self.cache.lock().expect("token cache").get(key).cloned()
    }

    /// The token for `key` at `now`: the cached one unless it needs a refresh, else a new one
    /// from `r` (a failed refresh keeps the cached token while it is valid).
    pub async fn get_at<R: TokenRequester>(
        &self,
        r: &R,
        key: &TokenKey,
        now: DateTime<Utc>,
    ) -> Result<String, TokenError> {
        let cached = self.cached(key);
        if let Some(c) = cached
            .as_ref()
            .filter(|c| !requires_refresh(now, c, jitter()))
        {
            return Ok(c.token.clone());
        }
        let fetched = r
            .request(&key.namespace, &key.service_account, &key.request())
            .await
            .map_err(TokenError::Fetch)
            .and_then(|tr| IssuedToken::from_response(tr, key.expiration_seconds));
        {
            let mut failed = self.failed.lock().expect("token failures");
            if fetched.is_ok() {
                failed.remove(key);
            } else {
                failed.insert(key.clone(), now);
            }
        }
        match (fetched, cached) {
            (Ok(t), _) => {
                let token = t.token.clone();
                let mut cache = self.cache.lock().expect("token cache");
                cache.retain(|_, c| c.expires > now);
                cache.insert(key.clone(), t);
                Ok(token)
            }
            (Err(e), None) => Err(e),
            (Err(e), Some(c)) if c.expires <= now => Err(TokenError::Expired {
                key: key.to_string(),
                cause: match e {
                    TokenError::Fetch(m) => m,
                    other => other.to_string(),
                },
            }),
            (Err(e), Some(c)) => {
                tracing::warn!(key = %key, "couldn't update token: {e}");
                Ok(c.token)
            }
        }
    }

    /// The tokens of every projection of `pod`, as [`TokenManager::get_at`] now.
    pub async fn pod_tokens<R: TokenRequester>(
        &self,
        r: &R,
        pod: &Pod,
    ) -> Result<PodTokens, super::VolumeError> {
        let now = Utc::now();
        let mut out = PodTokens::new();
        for (volume, path, key) in token_sources(pod) {
            let token =
                self.get_at(r, &key, now)
                    .await
                    .map_err(|source| super::VolumeError::Token {
                        volume: volume.clone(),
                        source,
                    })?;
            out.insert((volume, path), token);
        }
        Ok(out)
    }

    /// Whether some token of `pod` is not cached yet or is due for a refresh at `now` (the
    /// worker then lays the pod's volumes out again).
    /// A request that failed less than [`RETRY_AFTER_FAILURE`] ago is not due yet.
    pub fn refresh_due(&self, pod: &Pod, now: DateTime<Utc>) -> bool {
        let cache = self.cache.lock().expect("token cache");
        let failed = self.failed.lock().expect("token failures");
        token_sources(pod).iter().any(|(_, _, key)| {
            let recently_failed = failed
                .get(key)
                .is_some_and(|at| now < *at + RETRY_AFTER_FAILURE);
            !recently_failed
                && cache
                    .get(key)
                    .is_none_or(|c| requires_refresh(now, c, jitter()))
        })
    }

    /// Drops the tokens bound to the pod `uid` (it is gone).
    pub fn forget_pod(&self, uid: &str) {
        self.cache
            .lock()
            .expect("token cache")
            .retain(|k, _| k.pod_uid != uid);
        self.failed
            .lock()
            .expect("token failures")
            .retain(|k, _| k.pod_uid != uid);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.cache.lock().expect("token cache").len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Kubelet's `FsUserFrom`: the runAsUser every init and regular container runs as, when they
/// all name the same one (container's value, else the pod's).
pub fn fs_user(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut user: Option<i64> = None;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let u = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user)?;
        match user {
            Some(prev) if prev != u => return None,
            _ => user = Some(u),
        }
    }
    user
}

/// The file mode of a token (kubelet: the projection's `defaultMode`, but 0600 when an fsUser
/// or fsGroup applies, whose ownership then opens it to that user or group).
pub fn token_mode(pod: &Pod, default_mode: Option<i32>) -> u32 {
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group);
    if fs_group.is_some() || fs_user(pod).is_some() {
        0o600
    } else {
        default_mode.map_or(super::DEFAULT_MODE, |m| (m as u32) & 0o7777)
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
