//! The DaemonSet controller (upstream `pkg/controller/daemon`): one pod per eligible node
//! (nodeSelector, required node affinity, taints against the template's and the default daemon
//! tolerations), pinned to its node by node affinity for the scheduler to bind; extra, failed
//! (with back-off) and misplaced pods deleted; RollingUpdate (maxUnavailable, maxSurge) and
//! OnDelete over ControllerRevisions; status through the status subresource.

pub mod backoff;
pub mod eligibility;
pub mod history;
pub mod plan;
pub mod pods;
pub mod status;
pub mod sync;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::claim::{controller_of, ClaimError};
use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::Change;
use crate::selector::{labels_of, Selector};

/// Errors of one DaemonSet sync.
#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
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
    /// The DaemonSet cannot be acted on as it is.
    #[error("{0}")]
    Invalid(String),
}

/// The expectations key of the DaemonSet controlling `pod`, if any.
fn owner_key(pod: &Pod) -> Option<String> {
    let r = controller_of(pod)?;
    (r.kind == "DaemonSet" && r.api_version == "apps/v1").then(|| {
        format!(
            "DaemonSet/{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Feeds expectations from pod changes (before any controller sees them).
fn observe(ctx: &Ctx, change: &Change<Pod>) {
    match change {
        Change::Added(p) => {
            if let Some(k) = owner_key(p) {
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
                if let Some(k) = owner_key(new) {
                    ctx.expectations.deletion_observed(&k, &pod_key(new));
                }
            }
        }
        Change::Deleted(p) => {
            if let Some(k) = owner_key(p) {
                ctx.expectations.deletion_observed(&k, &pod_key(p));
            }
        }
    }
}

/// Whether a node change can change where daemon pods belong (upstream
/// `shouldIgnoreNodeUpdate`: labels, taints, unschedulable, or anything else in the spec).
fn node_matters(change: &Change<Node>) -> bool {
    match change {
        Change::Updated { old, new } => {
            old.metadata.labels != new.metadata.labels || old.spec != new.spec
        }
        _ => true,
    }
}

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    {
        let c = ctx.clone();
        ctx.pods.on_change(move |ch| observe(&c, ch));
        let c = ctx.clone();
        ctx.daemon_sets.on_change(move |ch| {
            if let Change::Deleted(o) = ch {
                c.expectations.forget(&key(&**o));
                c.daemon_backoff
                    .forget_set(o.metadata.uid.as_deref().unwrap_or(""));
            }
        });
    }
    let sets = ctx.daemon_sets.clone();
    let for_orphans = sets.clone();
    let for_nodes = sets.clone();
    let node_changes = ctx.nodes.subscribe().filter_map(|c| async move {
        node_matters(&c).then(|| Ok::<Node, watcher::Error>((**c.object()).clone()))
    });
    let ctrl = Controller::for_stream(sets.applied(), sets.store())
        .owns_stream(ctx.pods.touched())
        .watches_stream(ctx.pods.touched(), move |pod: Pod| {
            // An orphan wakes every DaemonSet whose selector matches it (to be adopted).
            if controller_of(&pod).is_some() {
                return Vec::new();
            }
            let labels = labels_of(&pod.metadata.labels);
            for_orphans
                .in_namespace(pod.metadata.namespace.as_deref().unwrap_or(""))
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
        .watches_stream(node_changes, move |_: Node| {
            for_nodes
                .all()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        });
    async move {
        ctx.ready().await;
        tracing::info!("daemonset controller started");
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Reconciles one DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, DaemonSetError> {
    let k = key(&*ds);
    let requeue = sync::sync(&ds, &ctx).await?;
    ctx.limiter.forget(&k);
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_heartbeats_do_not_wake_sets() {
        let mut a = Node::default();
        a.metadata.name = Some("n1".into());
        let mut heartbeat = a.clone();
        heartbeat.status = Some(Default::default());
        heartbeat.metadata.resource_version = Some("2".into());
        let mut relabelled = a.clone();
        relabelled.metadata.labels = Some([("disk".to_string(), "ssd".to_string())].into());
        let mut cordoned = a.clone();
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let upd = |new: &Node| Change::Updated {
            old: Arc::new(a.clone()),
            new: Arc::new(new.clone()),
        };
        assert!(!node_matters(&upd(&heartbeat)));
        assert!(node_matters(&upd(&relabelled)));
        assert!(node_matters(&upd(&cordoned)));
        assert!(node_matters(&Change::Added(Arc::new(a.clone()))));
        assert!(node_matters(&Change::Deleted(Arc::new(a.clone()))));
    }
}
