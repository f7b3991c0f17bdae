//! Authentication: turns a request's credentials into a [`UserInfo`].
//!
//! CONTRACT (filled in by the authentication work; the server and `start` call exactly this):
//! - [`Authenticator::new`] from [`AuthnConfig`];
//! - [`Authenticator::authenticate`]: `Ok(None)` when the request carries no credentials
//!   (the caller then treats it as anonymous), `Err` when it carries invalid ones (401);
//! - [`token_request`] serves `POST serviceaccounts/{name}/token`, [`token_review`] serves
//!   `POST tokenreviews`.
//!
//! The chain, in upstream's order: the client certificate ([`x509`]), then the bearer token as a
//! static token ([`token_file`]), a bootstrap token ([`bootstrap`], by shape) or a ServiceAccount
//! JWT ([`sa_token`], checked against the store: the ServiceAccount and the bound object must
//! still exist with the uids the token names).

pub mod bootstrap;
pub mod cache;
pub mod lookup;
mod request;
mod review;
pub mod sa_token;
pub mod token_file;
pub mod x509;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::user::{SERVICE_ACCOUNTS, SERVICE_ACCOUNT_PREFIX};
use super::UserInfo;
use crate::status::ApiError;
use kennel_store::Store;

pub use request::{DEFAULT_EXPIRATION_SECS, MAX_EXPIRATION_SECS, MIN_EXPIRATION_SECS};
pub use sa_token::{Claims, KubeClaims, Ref, SigningKey};
pub use x509::user_from_cert;

/// The API audience every server accepts besides its issuer (kubeadm's default issuer, which
/// in-cluster clients also use as the audience).
pub const DEFAULT_API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Extra key: the bound pod's name.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// Extra key: the bound pod's uid.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Extra key: the node's name.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// Extra key: the node's uid.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// Extra key: the credential id (`JTI=<jti>`).
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Errors of authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The credentials are not valid.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The static token file is malformed (names the line).
    #[error("token file: {0}")]
    TokenFile(String),
    /// The ServiceAccount signing key could not be loaded or created.
    #[error("service account key: {0}")]
    Key(String),
}

/// What the authenticator is built from.
pub struct AuthnConfig {
    /// The store (ServiceAccounts, pods and bootstrap-token Secrets are looked up in it).
    pub store: Arc<dyn Store>,
    /// The pki directory (ServiceAccount signing key, CA).
    pub pki_dir: PathBuf,
    /// Static tokens file contents (upstream CSV: `token,user,uid,"group1,group2"`).
    pub static_tokens: String,
    /// Token issuer (`iss`) of ServiceAccount tokens.
    pub issuer: String,
}

/// The credentials of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<&'a str>,
    /// The verified client certificate (leaf, DER), when the TLS client presented one.
    pub client_cert: Option<&'a [u8]>,
}

/// The authenticator chain.
pub struct Authenticator {
    store: Arc<dyn Store>,
    static_tokens: HashMap<String, UserInfo>,
    key: SigningKey,
    issuer: String,
    api_audiences: Vec<String>,
    cache: Arc<cache::TokenCache>,
    invalidator: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Authenticator {
    fn drop(&mut self) {
        if let Some(t) = &self.invalidator {
            t.abort();
        }
    }
}

impl Authenticator {
    /// Builds the chain (loads or creates the ServiceAccount signing key). Called on a tokio
    /// runtime it also starts the watch that keeps the token cache honest (see [`cache`](self::cache)).
    pub fn new(cfg: AuthnConfig) -> Result<Self, AuthnError> {
        let static_tokens = token_file::parse(&cfg.static_tokens)?;
        let key = SigningKey::load_or_create(&cfg.pki_dir)?;
        let mut api_audiences = vec![cfg.issuer.clone()];
        if cfg.issuer != DEFAULT_API_AUDIENCE {
            api_audiences.push(DEFAULT_API_AUDIENCE.to_string());
        }
        let cache = Arc::new(cache::TokenCache::default());
        let invalidator = cache::spawn_invalidator(cfg.store.clone(), &cache);
        Ok(Authenticator {
            store: cfg.store,
            static_tokens,
            key,
            issuer: cfg.issuer,
            api_audiences,
            cache,
            invalidator,
        })
    }

    /// Replaces the audiences the API server accepts (upstream's `--api-audiences`; by default
    /// the issuer and [`DEFAULT_API_AUDIENCE`]). Ignored when empty.
    pub fn with_api_audiences(mut self, audiences: Vec<String>) -> Self {
        if !audiences.is_empty() {
            self.api_audiences = audiences;
        }
        self
    }

    /// The audiences the API server accepts (and TokenRequests default to).
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The issuer of ServiceAccount tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The ServiceAccount token signing key (for `/openid/v1/jwks`).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Upstream's `/.well-known/openid-configuration` document for this issuer.
    pub fn openid_configuration(&self) -> Value {
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// Authenticates one request.
    pub async fn authenticate(&self, c: Credentials<'_>) -> Result<Option<UserInfo>, AuthnError> {
        let mut cert_err = None;
        if let Some(der) = c.client_cert {
            match x509::user_from_cert(der) {
                Ok(u) => return Ok(Some(u)),
                Err(e) => cert_err = Some(e),
            }
        }
        match c.bearer.map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => self.authenticate_bearer(token).await.map(Some),
            None => match cert_err {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }

    /// Authenticates a bearer token for the API server's own audiences (cached for SA tokens).
    async fn authenticate_bearer(&self, token: &str) -> Result<UserInfo, AuthnError> {
        if let Some(u) = self.static_tokens.get(token) {
            return Ok(u.clone());
        }
        let now = now();
        if let Some((id, secret)) = bootstrap::parse(token) {
            return bootstrap::authenticate(self.store.as_ref(), id, secret, now).await;
        }
        if !sa_token::looks_like_jwt(token) {
            return Err(AuthnError::Invalid("unknown bearer token".into()));
        }
        if let Some(u) = self.cache.get(token) {
            return Ok(u);
        }
        let generation = self.cache.generation();
        let (user, _, exp) = self.verify_sa(token, &self.api_audiences, now).await?;
        self.cache.put(token, &user, exp - now, generation);
        Ok(user)
    }

    /// Authenticates `token` for `audiences` (empty: the API audiences), uncached, as
    /// TokenReview does: `Ok(None)` when the token is valid but not for those audiences.
    /// Returns the user and the audiences it was authenticated for.
    pub async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Option<(UserInfo, Vec<String>)>, AuthnError> {
        let audiences = if audiences.is_empty() {
            &self.api_audiences[..]
        } else {
            audiences
        };
        let now = now();
        // Static and bootstrap tokens are audience-agnostic: they are valid for the API
        // audiences only (upstream's WrapAudienceAgnosticToken).
        let implicit = || -> Vec<String> {
            audiences
                .iter()
                .filter(|a| self.api_audiences.contains(a))
                .cloned()
                .collect()
        };
        let agnostic = |user: UserInfo| {
            let auds = implicit();
            Ok((!auds.is_empty()).then_some((user, auds)))
        };
        if let Some(u) = self.static_tokens.get(token) {
            return agnostic(u.clone());
        }
        if let Some((id, secret)) = bootstrap::parse(token) {
            return agnostic(bootstrap::authenticate(self.store.as_ref(), id, secret, now).await?);
        }
        if !sa_token::looks_like_jwt(token) {
            return Err(AuthnError::Invalid("unknown bearer token".into()));
        }
        let (user, auds, _) = self.verify_sa(token, audiences, now).await?;
        Ok(Some((user, auds)))
    }

    /// Signs a ServiceAccount token with these claims.
    pub fn issue(&self, claims: &Claims) -> Result<String, AuthnError> {
        self.key.sign(claims)
    }

    /// Reads one object for token validation.
    async fn fetch(
        &self,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, AuthnError> {
        lookup::get(self.store.as_ref(), plural, ns, name)
            .await
            .map_err(|e| AuthnError::Invalid(format!("token lookup: {e}")))
    }

    /// Verifies a ServiceAccount token: signature, issuer, time, audiences, then that the
    /// ServiceAccount and the bound object still exist with the token's uids.
    async fn verify_sa(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<(UserInfo, Vec<String>, i64), AuthnError> {
        let (claims, auds) = self.key.verify(token, &self.issuer, audiences, now)?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let inv = AuthnError::Invalid;
        let sa = self
            .fetch("serviceaccounts", Some(ns), &k.serviceaccount.name)
            .await?
            .ok_or_else(|| {
                inv(format!(
                    "service account {ns}/{} has been deleted",
                    k.serviceaccount.name
                ))
            })?;
        if lookup::uid(&sa) != k.serviceaccount.uid {
            return Err(inv(format!(
                "service account UID ({}) does not match claim ({})",
                lookup::uid(&sa),
                k.serviceaccount.uid
            )));
        }
        if sa["metadata"]["deletionTimestamp"].is_string() {
            return Err(inv(format!(
                "service account {ns}/{} is being deleted",
                k.serviceaccount.name
            )));
        }
        for (plural, namespaced, r) in [
            ("pods", true, &k.pod),
            ("secrets", true, &k.secret),
            // A pod-bound token names its pod's node for information only.
            (
                "nodes",
                false,
                if k.pod.is_none() { &k.node } else { &None },
            ),
        ] {
            let Some(r) = r else { continue };
            let what = plural.trim_end_matches('s');
            let obj = self
                .fetch(plural, namespaced.then_some(ns), &r.name)
                .await?
                .ok_or_else(|| {
                    inv(format!(
                        "{what} {:?} bound to the token has been deleted",
                        r.name
                    ))
                })?;
            if lookup::uid(&obj) != r.uid {
                return Err(inv(format!(
                    "{what} {:?} UID ({}) does not match the token's ({})",
                    r.name,
                    lookup::uid(&obj),
                    r.uid
                )));
            }
            if lookup::deleted(&obj, now) {
                return Err(inv(format!(
                    "{what} {:?} bound to the token has been deleted",
                    r.name
                )));
            }
        }
        let mut user = UserInfo {
            name: format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{}", k.serviceaccount.name),
            uid: k.serviceaccount.uid.clone(),
            groups: vec![SERVICE_ACCOUNTS.into(), format!("{SERVICE_ACCOUNTS}:{ns}")],
            ..Default::default()
        };
        let mut extra = |key: &str, v: &str| {
            user.extra.insert(key.to_string(), vec![v.to_string()]);
        };
        if let Some(p) = &k.pod {
            extra(EXTRA_POD_NAME, &p.name);
            extra(EXTRA_POD_UID, &p.uid);
        }
        if let Some(n) = &k.node {
            extra(EXTRA_NODE_NAME, &n.name);
            extra(EXTRA_NODE_UID, &n.uid);
        }
        if !claims.jti.is_empty() {
            extra(EXTRA_CREDENTIAL_ID, &format!("JTI={}", claims.jti));
        }
        user.ensure_authenticated();
        Ok((user, auds, claims.exp))
    }
}

/// Seconds since the epoch.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` (TokenRequest).
pub async fn token_request(
    authn: &Authenticator,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    request::serve(authn, ns, name, body).await
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub async fn token_review(authn: &Authenticator, body: &Value) -> Result<Value, ApiError> {
    review::serve(authn, body).await
}

#[cfg(test)]
mod tests;
