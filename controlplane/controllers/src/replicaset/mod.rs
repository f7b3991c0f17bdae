//! The ReplicaSet (and ReplicationController) controller: keeps `spec.replicas` active pods that
//! match the selector, adopting orphans and releasing pods that stopped matching, and reports
//! status through the status subresource (upstream's `syncReplicaSet`).

pub mod kinds;
pub mod manage;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

pub use kinds::ReplicaOwner;

use crate::claim::{self, controller_of, ClaimError, OwnerInfo};
use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::Change;
use crate::podutil;
use crate::selector::labels_of;
use status::{Failure, ReplicaStatus};

/// Errors of one ReplicaSet sync.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    /// Adoption or release failed.
    #[error("claim pods: {0}")]
    Claim(#[from] ClaimError),
    /// Creating or deleting pods failed.
    #[error("{}: {}", .0.reason, .0.message)]
    Manage(Failure),
    /// Writing status failed.
    #[error("update status: {0}")]
    Status(kube::Error),
}

/// The expectations key of the `R` controlling `pod`, if any.
fn owner_key<R: ReplicaOwner>(pod: &Pod) -> Option<String> {
    let r = controller_of(pod)?;
    (r.kind == R::kind(&()) && r.api_version == R::api_version(&())).then(|| {
        format!(
            "{}/{}/{}",
            r.kind,
            pod.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Feeds expectations from pod changes (before any controller sees them).
fn observe<R: ReplicaOwner>(ctx: &Ctx, change: &Change<Pod>) {
    match change {
        Change::Added(p) => {
            if let Some(k) = owner_key::<R>(p) {
                if p.metadata.deletion_timestamp.is_some() {
                    ctx.expectations.deletion_observed(&k, &pod_key(p));
                } else {
                    ctx.expectations.creation_observed(&k);
                }
            }
        }
        Change::Updated { old, new } => {
            if new.metadata.deletion_timestamp.is_some()
                && old.metadata.deletion_timestamp.is_none()
            {
                if let Some(k) = owner_key::<R>(new) {
                    ctx.expectations.deletion_observed(&k, &pod_key(new));
                }
            }
        }
        Change::Deleted(p) => {
            if let Some(k) = owner_key::<R>(p) {
                ctx.expectations.deletion_observed(&k, &pod_key(p));
            }
        }
    }
}

/// Runs the controller for kind `R` (forever). Registration happens before the first await, so
/// build this future before the informers start.
pub fn controller<R: ReplicaOwner>(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let inf = R::informer(&ctx).clone();
    {
        let c = ctx.clone();
        ctx.pods.on_change(move |ch| observe::<R>(&c, ch));
        let c = ctx.clone();
        inf.on_change(move |ch| {
            if let Change::Deleted(o) = ch {
                c.expectations.forget(&key(&**o));
            }
        });
    }
    let owners = inf.clone();
    let ctrl = Controller::for_stream(inf.applied(), inf.store())
        .owns_stream(ctx.pods.touched())
        .watches_stream(ctx.pods.touched(), move |pod: Pod| {
            // An orphan wakes every controller whose selector matches it (to be adopted).
            if controller_of(&pod).is_some() {
                return Vec::new();
            }
            let labels = labels_of(&pod.metadata.labels);
            owners
                .in_namespace(pod.metadata.namespace.as_deref().unwrap_or(""))
                .iter()
                .filter(|o| o.selector().is_some_and(|s| s.matches(&labels)))
                .map(|o| ObjectRef::from_obj(&**o))
                .collect::<Vec<_>>()
        });
    async move {
        ctx.ready().await;
        tracing::info!(kind = %R::kind(&()), "controller started");
        drain(ctrl.run(reconcile::<R>, error_policy, ctx).boxed()).await;
    }
}

/// Reconciles one ReplicaSet/ReplicationController.
pub async fn reconcile<R: ReplicaOwner>(
    rs: Arc<R>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReplicaSetError> {
    let k = key(&*rs);
    let r = sync(&rs, &ctx, &k).await;
    if r.is_ok() {
        ctx.limiter.forget(&k);
    }
    r
}

/// All pods of `rs`'s owner family (every ReplicaSet of the same Deployment), for ranking.
fn related_pods<R: ReplicaOwner>(rs: &R, ctx: &Ctx) -> Vec<Arc<Pod>> {
    let own = rs.meta().uid.clone().unwrap_or_default();
    let Some(parent) = controller_of(rs).map(|r| r.uid.clone()) else {
        return ctx.pods.owned_by(&own);
    };
    R::informer(ctx)
        .in_namespace(&rs.namespace().unwrap_or_default())
        .iter()
        .filter(|s| controller_of(&***s).is_some_and(|r| r.uid == parent))
        .flat_map(|s| ctx.pods.owned_by(s.meta().uid.as_deref().unwrap_or("")))
        .collect()
}

async fn sync<R: ReplicaOwner>(
    rs: &Arc<R>,
    ctx: &Arc<Ctx>,
    k: &str,
) -> Result<Action, ReplicaSetError> {
    let pending = ctx.expectations.pending(k, Instant::now());
    let ns = rs.namespace().unwrap_or_default();
    let owner = OwnerInfo::of(&**rs);
    let Some(selector) = rs.selector() else {
        return Ok(Action::await_change());
    };
    let active: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| podutil::is_active(p))
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let rs_api: Api<R> = Api::namespaced(ctx.client.clone(), &ns);
    let claimed = claim::claim(&pods_api, &owner, &selector, active, || {
        claim::recheck_owner(&rs_api, &owner)
    })
    .await?;
    let pods: Vec<&Pod> = claimed.iter().map(|p| &**p).collect();
    let mut failure = None;
    if pending.is_none() && !owner.deleting {
        let related = related_pods(&**rs, ctx);
        let related: Vec<&Pod> = related.iter().map(|p| &**p).collect();
        if let Err(f) = manage::manage(
            ctx,
            &**rs,
            k,
            &owner,
            rs.template(),
            rs.replicas(),
            &pods,
            &related,
        )
        .await
        {
            failure = Some(f);
        }
    }
    let old = ReplicaStatus::from_json(&rs.status_json());
    let template_labels = rs
        .template()
        .and_then(|t| t.metadata.as_ref())
        .map(|m| labels_of(&m.labels))
        .unwrap_or_default();
    let new = status::calculate(
        &old,
        rs.meta().generation.unwrap_or(0),
        &template_labels,
        rs.min_ready_seconds(),
        &pods,
        failure.as_ref(),
        podutil::now(),
    );
    if new != old {
        rs_api
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&new.to_patch()),
            )
            .await
            .map_err(ReplicaSetError::Status)?;
    }
    if let Some(f) = failure {
        return Err(ReplicaSetError::Manage(f));
    }
    let min_ready = rs.min_ready_seconds();
    if min_ready > 0 && new.ready == rs.replicas() && new.available != rs.replicas() {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64 + 1)));
    }
    if let Some(d) = pending {
        return Ok(Action::requeue(d));
    }
    Ok(Action::await_change())
}
