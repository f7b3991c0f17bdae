//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount
//! (created when the namespace appears, recreated when deleted).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::ctx::{drain, error_policy, key, Ctx};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SA: &str = "default";

/// Errors of one namespace sync.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    /// Creating the ServiceAccount failed.
    #[error("create serviceaccount {ns}/default: {source}")]
    Create {
        /// Namespace.
        ns: String,
        /// Cause.
        source: kube::Error,
    },
}

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let ctrl = Controller::for_stream(ctx.namespaces.applied(), ctx.namespaces.store())
        .watches_stream(ctx.service_accounts.touched(), |sa: ServiceAccount| {
            (sa.name_any() == DEFAULT_SA)
                .then(|| ObjectRef::new(&sa.namespace().unwrap_or_default()))
        });
    async move {
        ctx.ready().await;
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Ensures `ns` has its default ServiceAccount.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ServiceAccountError> {
    let name = ns.name_any();
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating || ctx.service_accounts.get(&name, DEFAULT_SA).is_some() {
        ctx.limiter.forget(&key(&*ns));
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SA.into()),
            namespace: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::info!(namespace = %name, "created default serviceaccount"),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
        Err(source) => return Err(ServiceAccountError::Create { ns: name, source }),
    }
    ctx.limiter.forget(&key(&*ns));
    Ok(Action::await_change())
}
