//! Authorization: `system:masters`, the Node authorizer, then RBAC; plus RBAC's escalation checks,
//! the bootstrap policy and the access reviews.
//!
//! CONTRACT (the server and `start` call exactly this):
//! - [`Authorizer::start`] loads RBAC objects (and what the Node authorizer needs) from the store
//!   and keeps them current with a watch;
//! - [`Authorizer::authorize`] decides one request;
//! - [`forbidden_message`] is upstream's 403 text;
//! - [`reconcile_bootstrap_policy`] creates/updates the bootstrap roles and bindings at start;
//! - [`Authorizer::check_escalation`] is called before a Role/ClusterRole/RoleBinding/
//!   ClusterRoleBinding is written, with the final object;
//! - [`Authorizer::access_review`] answers SelfSubjectAccessReview, SubjectAccessReview,
//!   LocalSubjectAccessReview and SelfSubjectRulesReview creates.
//!
//! Decisions read an in-memory index ([`cache`]): bindings by subject, roles by name, and the
//! node → object graph of bound pods. An allowed request never touches the store; a request
//! about to be denied first lets the index catch up with the store (bounded, see
//! [`cache::CATCH_UP`]) so a grant written a moment ago is seen.

pub mod bootstrap;
pub mod cache;
pub mod escalation;
pub mod index;
pub mod message;
pub mod node;
pub mod node_restriction;
pub mod policy;
pub mod rbac;
pub mod review;
pub mod volumes;

use std::sync::Arc;

use serde_json::Value;

use super::user::{MASTERS, NODES};
use super::{Attributes, UserInfo};
use crate::registry::ResourceDef;
use crate::status::ApiError;
use kennel_store::{Store, StoreError};

pub use message::forbidden_message;

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
    cache: Arc<cache::Cache>,
    node_rules: Vec<rbac::PolicyRule>,
}

impl Authorizer {
    /// Loads the authorization state and keeps it current.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Authorizer {
            cache: cache::Cache::start(store).await?,
            node_rules: node::node_rules(),
        }))
    }

    /// Decides one request.
    pub async fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.in_group(MASTERS) {
            return Decision::Allow(String::new());
        }
        let d = self.decide(a);
        if matches!(d, Decision::Allow(_)) {
            return d;
        }
        if self.cache.catch_up().await {
            return self.decide(a);
        }
        d
    }

    /// The chain on the index as it is now (upstream's union authorizer: reasons of the
    /// authorizers that had none joined by newlines).
    fn decide(&self, a: &Attributes) -> Decision {
        if a.user.in_group(MASTERS) {
            return Decision::Allow(String::new());
        }
        let idx = self.cache.read();
        let mut reasons: Vec<String> = Vec::new();
        if a.user.in_group(NODES) {
            match a.user.node_name() {
                Some(n) => match node::authorize(&idx, &self.node_rules, n, a) {
                    Ok(()) => return Decision::Allow(String::new()),
                    Err(r) if !r.is_empty() => reasons.push(r),
                    Err(_) => {}
                },
                _ => reasons.push(format!("unknown node for user {:?}", a.user.name)),
            }
        }
        match idx.rbac_allows(a) {
            Ok(reason) => Decision::Allow(reason),
            Err(errors) => {
                if !errors.is_empty() {
                    let agg = if errors.len() == 1 {
                        errors[0].clone()
                    } else {
                        format!("[{}]", errors.join(", "))
                    };
                    reasons.push(format!("RBAC: {agg}"));
                }
                Decision::NoOpinion(reasons.join("\n"))
            }
        }
    }

    /// Refuses writing an RBAC object that grants more than `user` holds (unless `escalate`/`bind`).
    pub async fn check_escalation(
        &self,
        user: &UserInfo,
        def: &ResourceDef,
        namespace: Option<&str>,
        obj: &Value,
    ) -> Result<(), ApiError> {
        escalation::check(self, user, def, namespace, obj).await
    }

    /// Answers an access review create (`def` is the review resource) by `user`.
    pub async fn access_review(
        &self,
        user: &UserInfo,
        def: &ResourceDef,
        namespace: Option<&str>,
        body: &Value,
    ) -> Result<Value, ApiError> {
        review::review(self, user, def, namespace, body).await
    }

    /// The store revision the index has applied (for tests and metrics).
    pub fn applied_revision(&self) -> i64 {
        self.cache.applied()
    }
}

/// Creates or updates the bootstrap roles and bindings.
pub async fn reconcile_bootstrap_policy(store: &dyn Store) -> Result<(), StoreError> {
    policy::reconcile(store).await
}

#[cfg(test)]
mod tests;
