//! The two kinds the replica controller drives: `apps/v1` ReplicaSet and `v1`
//! ReplicationController (same logic, different selector type and status type).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::informer::Informer;
use crate::selector::Selector;

/// A controller of interchangeable pods.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Its pod selector (`None`: selects nothing).
    fn selector(&self) -> Option<Selector>;
    /// Desired pods.
    fn replicas(&self) -> i32;
    /// Seconds a pod must be ready to count as available.
    fn min_ready_seconds(&self) -> i32;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The current status, as JSON.
    fn status_json(&self) -> serde_json::Value;
    /// The shared informer of this kind.
    fn informer(ctx: &Ctx) -> &Informer<Self>;
}

impl ReplicaOwner for ReplicaSet {
    fn selector(&self) -> Option<Selector> {
        self.spec
            .as_ref()
            .map(|s| Selector::from_label_selector(&s.selector))
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.status).unwrap_or_default()
    }
    fn informer(ctx: &Ctx) -> &Informer<Self> {
        &ctx.replica_sets
    }
}

impl ReplicaOwner for ReplicationController {
    fn selector(&self) -> Option<Selector> {
        let spec = self.spec.as_ref()?;
        match &spec.selector {
            Some(m) if !m.is_empty() => Some(Selector::from_map(m)),
            // An empty selector defaults to the template's labels.
            _ => spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref())
                .map(Selector::from_map),
        }
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.status).unwrap_or_default()
    }
    fn informer(ctx: &Ctx) -> &Informer<Self> {
        &ctx.replication_controllers
    }
}
