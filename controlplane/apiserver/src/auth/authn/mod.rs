//! Authentication: turns a request's credentials into a [`UserInfo`].
//!
//! CONTRACT (filled in by the authentication work; the server and `start` call exactly this):
//! - [`Authenticator::new`] from [`AuthnConfig`];
//! - [`Authenticator::authenticate`]: `Ok(None)` when the request carries no credentials
//!   (the caller then treats it as anonymous), `Err` when it carries invalid ones (401);
//! - [`token_request`] serves `POST serviceaccounts/{name}/token`, [`token_review`] serves
//!   `POST tokenreviews`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::UserInfo;
use crate::status::ApiError;
use kennel_store::Store;

/// Errors of authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The credentials are not valid.
    #[error("invalid credentials: {0}")]
    Invalid(String),
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
    _cfg: AuthnConfig,
}

impl Authenticator {
    /// Builds the chain (loads or creates the ServiceAccount signing key).
    pub fn new(cfg: AuthnConfig) -> Result<Self, AuthnError> {
        Ok(Authenticator { _cfg: cfg })
    }

    /// Authenticates one request.
    pub async fn authenticate(&self, _c: Credentials<'_>) -> Result<Option<UserInfo>, AuthnError> {
        Ok(None)
    }
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` (TokenRequest).
pub async fn token_request(
    _authn: &Authenticator,
    _ns: &str,
    _name: &str,
    _body: &Value,
) -> Result<Value, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub async fn token_review(_authn: &Authenticator, _body: &Value) -> Result<Value, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
