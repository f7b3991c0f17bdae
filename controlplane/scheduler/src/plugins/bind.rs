//! DefaultBinder: POST `pods/{name}/binding` (the scheduler never writes pod specs).

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::framework::{BindFailure, BindPlugin};

/// The DefaultBinder plugin.
pub struct DefaultBinder {
    /// API client.
    pub client: kube::Client,
}

/// Maps an API error of a binding to a [`BindFailure`].
pub fn classify(e: &kube::Error) -> BindFailure {
    match e {
        kube::Error::Api(s) if s.code == 404 => BindFailure::Gone(s.message.clone()),
        kube::Error::Api(s) if s.code == 409 && s.message.contains("being deleted") => {
            BindFailure::Gone(s.message.clone())
        }
        kube::Error::Api(s) if s.code == 409 => BindFailure::AlreadyBound(s.message.clone()),
        other => BindFailure::Other(other.to_string()),
    }
}

impl BindPlugin for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }
    fn bind(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Result<(), BindFailure>> {
        let client = self.client.clone();
        Box::pin(async move {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node),
                    ..Default::default()
                },
            };
            let api: Api<Pod> = Api::namespaced(client, &ns);
            api.create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
        })
    }
}
