//! The ClusterRole aggregation controller (upstream's `clusterrole-aggregation`): every
//! ClusterRole with `aggregationRule.clusterRoleSelectors` gets as `rules` the union of the rules
//! of the other ClusterRoles matching any selector (deduplicated; per selector, roles in name
//! order, rules in their order), re-computed whenever any ClusterRole changes.
//!
//! ClusterRoles are not among the shared informers of [`Ctx`], so the controller runs its own
//! ClusterRole informer (one watch) inside its future.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::Informer;
use crate::selector::{labels_of, Selector};

/// Errors of one ClusterRole sync.
#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    /// Writing the aggregated rules failed.
    #[error("update clusterrole {name}: {source}")]
    Update {
        /// ClusterRole name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
}

fn selectors(role: &ClusterRole) -> &[LabelSelector] {
    role.aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.as_deref())
        .unwrap_or_default()
}

/// Whether `role` aggregates a ClusterRole labelled `labels`.
fn selects(role: &ClusterRole, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selectors(role)
        .iter()
        .any(|s| Selector::from_label_selector(s).matches(labels))
}

/// The aggregated rules of `role` given every ClusterRole (upstream's order: per selector, the
/// matching roles other than `role` by name, each rule once).
pub fn aggregate(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    let name = role.name_any();
    for sel in selectors(role) {
        let sel = Selector::from_label_selector(sel);
        let mut matching: Vec<&Arc<ClusterRole>> = all
            .iter()
            .filter(|r| r.name_any() != name && sel.matches(&labels_of(&r.metadata.labels)))
            .collect();
        matching.sort_by_key(|r| r.name_any());
        for r in matching {
            for rule in r.rules.iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    rules
}

/// Runs the controller (forever), with its ClusterRole informer.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let roles: Informer<ClusterRole> = Informer::new();
    let reader = roles.store();
    let ctrl = Controller::for_stream(roles.applied(), roles.store()).watches_stream(
        roles.touched(),
        move |changed: ClusterRole| {
            let labels = labels_of(&changed.metadata.labels);
            reader
                .state()
                .into_iter()
                .filter(|r| selects(r, &labels))
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        },
    );
    let client = ctx.client.clone();
    let store = roles.store();
    async move {
        let informer = roles.clone().run(Api::all(client)).boxed();
        let run = async move {
            roles.ready().await;
            let reconcile =
                move |role: Arc<ClusterRole>, ctx: Arc<Ctx>| reconcile(role, ctx, store.clone());
            drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
        }
        .boxed();
        futures::future::select(informer, run).await;
    }
}

/// Sets the aggregated rules of `role` when they differ.
pub async fn reconcile(
    role: Arc<ClusterRole>,
    ctx: Arc<Ctx>,
    roles: Store<ClusterRole>,
) -> Result<Action, AggregationError> {
    if selectors(&role).is_empty() {
        return Ok(Action::await_change());
    }
    let rules = aggregate(&role, &roles.state());
    let name = role.name_any();
    if role.rules.clone().unwrap_or_default() != rules {
        let api: Api<ClusterRole> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({ "rules": rules });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(clusterrole = %name, rules = rules.len(), "aggregated rules"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(AggregationError::Update { name, source }),
        }
    }
    ctx.limiter.forget(&key(&*role));
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cr(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn union_in_name_order_without_duplicates() {
        let agg = cr(json!({"metadata": {"name": "agg", "labels": {"a": "1"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "1"}}, {"matchExpressions": [{"key": "b", "operator": "Exists"}]}]}}));
        let rule = |verb: &str| json!({"verbs": [verb], "apiGroups": [""], "resources": ["pods"]});
        let all = vec![
            agg.clone(),
            cr(json!({"metadata": {"name": "z", "labels": {"a": "1"}}, "rules": [rule("get")]})),
            cr(
                json!({"metadata": {"name": "m", "labels": {"a": "1"}}, "rules": [rule("list"), rule("get")]}),
            ),
            cr(
                json!({"metadata": {"name": "b", "labels": {"b": "x"}}, "rules": [rule("watch"), rule("list")]}),
            ),
            cr(json!({"metadata": {"name": "other"}, "rules": [rule("delete")]})),
        ];
        let verbs: Vec<String> = aggregate(&agg, &all)
            .into_iter()
            .map(|r| r.verbs[0].clone())
            .collect();
        assert_eq!(verbs, ["list", "get", "watch"]);
        let labels = labels_of(&all[3].metadata.labels);
        assert!(selects(&agg, &labels));
        assert!(!selects(&all[1], &labels));
    }
}
