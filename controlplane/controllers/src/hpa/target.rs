//! The scale target: `spec.scaleTargetRef` resolved through discovery (any kind with a
//! `scale` subresource: Deployments, ReplicaSets, StatefulSets, ReplicationControllers, custom
//! resources), read and written through its autoscaling/v1 `Scale`.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

/// Why the target's scale could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `apiVersion` is malformed.
    #[error("invalid API version in scale target reference: {0:?}")]
    ApiVersion(String),
    /// Discovery does not know the kind.
    #[error("unable to determine resource for scale target reference: {0}")]
    Mapping(String),
    /// The scale request failed.
    #[error("{0}")]
    Request(String),
}

fn message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        e => e.to_string(),
    }
}

/// Resolves and caches scale targets (the HPA's RESTMapper).
#[derive(Default)]
pub struct Targets {
    mappings: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Targets {
    /// The API resource of `r` (discovery, cached per apiVersion and kind).
    pub async fn resource(
        &self,
        client: &kube::Client,
        r: &CrossVersionObjectReference,
    ) -> Result<ApiResource, TargetError> {
        let api_version = r.api_version.clone().unwrap_or_default();
        let cache_key = (api_version.clone(), r.kind.clone());
        if let Some(ar) = self.mappings.lock().expect("targets lock").get(&cache_key) {
            return Ok(ar.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) if !g.is_empty() && !v.is_empty() && !v.contains('/') => (g, v),
            None if !api_version.is_empty() => ("", api_version.as_str()),
            _ => return Err(TargetError::ApiVersion(api_version.clone())),
        };
        let gvk = GroupVersionKind::gvk(group, version, &r.kind);
        let (ar, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| TargetError::Mapping(message(e)))?;
        self.mappings
            .lock()
            .expect("targets lock")
            .insert(cache_key, ar.clone());
        Ok(ar)
    }

    /// Forgets every mapping (after a failure, so a new CRD is picked up).
    pub fn forget(&self) {
        self.mappings.lock().expect("targets lock").clear();
    }
}

/// `GET .../{name}/scale`.
pub async fn get_scale(
    client: &kube::Client,
    ar: &ApiResource,
    ns: &str,
    name: &str,
) -> Result<Scale, TargetError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    api.get_scale(name)
        .await
        .map_err(|e| TargetError::Request(message(e)))
}

/// `PUT .../{name}/scale`.
pub async fn put_scale(
    client: &kube::Client,
    ar: &ApiResource,
    ns: &str,
    scale: &Scale,
) -> Result<Scale, TargetError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let name = scale.metadata.name.clone().unwrap_or_default();
    api.replace_scale(&name, &PostParams::default(), scale)
        .await
        .map_err(|e| TargetError::Request(message(e)))
}
