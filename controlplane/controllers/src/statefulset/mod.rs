//! The StatefulSet controller (upstream `StatefulSetController` + `defaultStatefulSetControl`):
//! pods `<set>-<ordinal>` with stable hostnames under the governing Service and a claim per
//! `volumeClaimTemplates` entry, created in order (OrderedReady) or all at once (Parallel),
//! deleted from the highest ordinal; RollingUpdate with a partition (and maxUnavailable) or
//! OnDelete over ControllerRevisions; status through the status subresource.

pub mod identity;
pub mod plan;
pub mod revision;
pub mod status;
pub mod sync;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::claim::{controller_of, ClaimError};
use crate::ctx::{drain, error_policy, key, Ctx};
use crate::selector::{labels_of, Selector};

/// Errors of one StatefulSet sync.
#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    /// Adoption or release failed.
    #[error("claim: {0}")]
    Claim(#[from] ClaimError),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// Writing status failed.
    #[error("update status: {0}")]
    Status(kube::Error),
    /// The set cannot be acted on as it is.
    #[error("{0}")]
    Invalid(String),
}

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let sets = ctx.stateful_sets.clone();
    let for_orphans = sets.clone();
    let ctrl = Controller::for_stream(sets.applied(), sets.store())
        .owns_stream(ctx.pods.touched())
        .watches_stream(ctx.pods.touched(), move |pod: Pod| {
            // An orphan named `<set>-<n>` wakes that set if its selector matches (adoption).
            if controller_of(&pod).is_some() {
                return Vec::new();
            }
            let pod_name = pod.name_any();
            let Some((parent, _)) = identity::parent_and_ordinal(&pod_name) else {
                return Vec::new();
            };
            let labels = labels_of(&pod.metadata.labels);
            for_orphans
                .get(&pod.namespace().unwrap_or_default(), parent)
                .filter(|s| {
                    s.spec.as_ref().is_some_and(|spec| {
                        let sel = Selector::from_label_selector(&spec.selector);
                        !sel.is_empty() && sel.matches(&labels)
                    })
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .into_iter()
                .collect::<Vec<_>>()
        });
    async move {
        ctx.ready().await;
        tracing::info!("statefulset controller started");
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Reconciles one StatefulSet.
pub async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, StatefulSetError> {
    let k = key(&*set);
    let requeue = sync::sync(&set, &ctx).await?;
    ctx.limiter.forget(&k);
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
