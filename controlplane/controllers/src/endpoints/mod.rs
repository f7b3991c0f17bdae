//! The Endpoints and EndpointSlice controllers: for every Service with a selector, the
//! EndpointSlices (`managed-by: endpointslice-controller.k8s.io`, owned by the Service, at most
//! 100 endpoints each, one per resolved port set) and the core/v1 Endpoints of the same name,
//! from its pods' addresses and readiness. Written only when they differ; the Endpoints of a
//! deleted Service are removed with it (its slices go by owner reference).

pub mod compute;
pub mod mirror;
mod write;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::{Change, Informer};
use crate::selector::labels_of;

/// `endpointslice.kubernetes.io/managed-by` of the slices this controller writes.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// Errors of one Service's sync.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    /// An API write failed.
    #[error("{what} {ns}/{name}: {source}")]
    Write {
        /// What was written.
        what: &'static str,
        /// Namespace.
        ns: String,
        /// Object name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
}

/// The Services of `pod`'s namespace whose selector matches it.
fn services_of(services: &Informer<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let ns = pod.namespace().unwrap_or_default();
    let labels = labels_of(&pod.metadata.labels);
    services
        .in_namespace(&ns)
        .iter()
        .filter(|s| compute::managed(s) && compute::selector(s).matches(&labels))
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let services = ctx.services.clone();
    let client = ctx.client.clone();
    // The Endpoints of a deleted Service go with it (upstream's Endpoints controller does this).
    ctx.services.on_change(move |c| {
        if let Change::Deleted(svc) = c {
            if !compute::managed(svc) {
                return;
            }
            let api: Api<Endpoints> =
                Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
            let name = svc.name_any();
            tokio::spawn(async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => tracing::debug!("delete endpoints {name}: {e}"),
                }
            });
        }
    });
    let ctrl = Controller::for_stream(ctx.services.applied(), ctx.services.store())
        .watches_stream(ctx.pods.touched(), move |pod: Pod| {
            services_of(&services, &pod)
        })
        .watches_stream(ctx.endpoint_slices.touched(), |s: EndpointSlice| {
            let svc = s.labels().get(SERVICE_NAME)?.clone();
            Some(ObjectRef::new(&svc).within(&s.namespace().unwrap_or_default()))
        })
        .watches_stream(ctx.endpoints.touched(), |e: Endpoints| {
            Some(ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default()))
        });
    async move {
        ctx.ready().await;
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Brings the slices and the Endpoints of `svc` in line with its pods.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, EndpointsError> {
    if !compute::managed(&svc) || svc.metadata.deletion_timestamp.is_some() {
        ctx.limiter.forget(&key(&*svc));
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let pods = ctx.pods.in_namespace(&ns);
    let eps = compute::endpoints_of(&svc, &pods, &|_| None);
    write::slices(&svc, &eps, &ctx).await?;
    write::endpoints(&svc, &eps, &ctx).await?;
    ctx.limiter.forget(&key(&*svc));
    // A relabelled pod no longer wakes the Service it left: resync now and then.
    Ok(Action::requeue(Duration::from_secs(300)))
}
