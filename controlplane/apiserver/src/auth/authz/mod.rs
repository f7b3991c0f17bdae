//! Authorization: `system:masters`, the Node authorizer, then RBAC; plus RBAC's escalation checks,
//! the bootstrap policy and the access reviews.
//!
//! CONTRACT (filled in by the authorization work; the server and `start` call exactly this):
//! - [`Authorizer::start`] loads RBAC objects (and what the Node authorizer needs) from the store
//!   and keeps them current with a watch;
//! - [`Authorizer::authorize`] decides one request;
//! - [`forbidden_message`] is upstream's 403 text;
//! - [`reconcile_bootstrap_policy`] creates/updates the bootstrap roles and bindings at start;
//! - [`Authorizer::check_escalation`] is called before a Role/ClusterRole/RoleBinding/
//!   ClusterRoleBinding is written, with the final object;
//! - [`Authorizer::access_review`] answers SelfSubjectAccessReview, SubjectAccessReview,
//!   LocalSubjectAccessReview and SelfSubjectRulesReview creates.

use std::sync::Arc;

use serde_json::Value;

use super::{Attributes, UserInfo};
use crate::registry::ResourceDef;
use crate::status::ApiError;
use kennel_store::{Store, StoreError};

/// One authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the reason (e.g. the binding that allowed it).
    Allow(String),
    /// Denied outright (no later authorizer is asked).
    Deny(String),
    /// This authorizer has no opinion (denied when no authorizer allows).
    NoOpinion(String),
}

/// The authorizer chain.
pub struct Authorizer {
    _store: Arc<dyn Store>,
}

impl Authorizer {
    /// Loads the authorization state and keeps it current.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Authorizer { _store: store }))
    }

    /// Decides one request.
    pub async fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.in_group(crate::auth::user::MASTERS) {
            return Decision::Allow("system:masters".into());
        }
        Decision::NoOpinion(String::new())
    }

    /// Refuses writing an RBAC object that grants more than `user` holds (unless `escalate`/`bind`).
    pub async fn check_escalation(
        &self,
        _user: &UserInfo,
        _def: &ResourceDef,
        _namespace: Option<&str>,
        _obj: &Value,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Answers an access review create (`def` is the review resource) by `user`.
    pub async fn access_review(
        &self,
        _user: &UserInfo,
        _def: &ResourceDef,
        _namespace: Option<&str>,
        _body: &Value,
    ) -> Result<Value, ApiError> {
        Err(ApiError::MethodNotAllowed)
    }
}

/// Upstream's 403 message for a denied request, e.g. `User "x" cannot list resource "pods" in
/// API group "" in the namespace "y"`, with the reason appended when there is one.
pub fn forbidden_message(a: &Attributes, reason: &str) -> String {
    let _ = reason;
    format!(
        "User {:?} cannot {} resource {:?}",
        a.user.name,
        a.verb,
        a.full_resource()
    )
}

/// Creates or updates the bootstrap roles and bindings.
pub async fn reconcile_bootstrap_policy(_store: &dyn Store) -> Result<(), StoreError> {
    Ok(())
}
