//! The Deployment controller: ReplicaSets per pod template (`<name>-<pod-template-hash>`),
//! RollingUpdate and Recreate rollouts, proportional scaling, revisions and history for
//! `kubectl rollout`, progress deadlines and the Available/Progressing conditions.

pub mod progress;
pub mod replicasets;
pub mod sync;
pub mod util;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

pub use sync::DeploymentError;

use crate::claim::controller_of;
use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::Change;
use crate::selector::{labels_of, Selector};

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let deployments = ctx.deployments.clone();
    let for_orphans = deployments.clone();
    let for_pods = (deployments.clone(), ctx.replica_sets.clone());
    // Pod deletions matter to Recreate rollouts (they wait for old pods to be gone).
    let pod_deletions = ctx.pods.subscribe().filter_map(|c| async move {
        match c {
            Change::Deleted(p) => Some(Ok((*p).clone())),
            _ => None,
        }
    });
    let ctrl = Controller::for_stream(deployments.applied(), deployments.store())
        .owns_stream(ctx.replica_sets.touched())
        .watches_stream(ctx.replica_sets.touched(), move |rs: ReplicaSet| {
            if controller_of(&rs).is_some() {
                return Vec::new();
            }
            let labels = labels_of(&rs.metadata.labels);
            for_orphans
                .in_namespace(&rs.namespace().unwrap_or_default())
                .iter()
                .filter(|d| {
                    d.spec.as_ref().is_some_and(|s| {
                        let sel = Selector::from_label_selector(&s.selector);
                        !sel.is_empty() && sel.matches(&labels)
                    })
                })
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        })
        .watches_stream(pod_deletions, move |pod: Pod| {
            let (deployments, rss) = &for_pods;
            let ns = pod.namespace().unwrap_or_default();
            let rs = controller_of(&pod).and_then(|r| rss.get(&ns, &r.name));
            let d = rs
                .as_deref()
                .and_then(controller_of)
                .and_then(|r| deployments.get(&ns, &r.name));
            d.filter(|d| !util::is_rolling(d))
                .map(|d| ObjectRef::from_obj(&*d))
                .into_iter()
                .collect::<Vec<_>>()
        });
    async move {
        ctx.ready().await;
        tracing::info!("deployment controller started");
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Reconciles one Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, DeploymentError> {
    let k = key(&*d);
    let requeue = sync::sync(&d, &ctx).await?;
    ctx.limiter.forget(&k);
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
