//! A DaemonSet's pod writes (upstream `syncNodes`): new pods from the template with the
//! revision hash label, the daemon tolerations and node affinity pinning them to their node
//! (the scheduler binds them), created in slow-start batches; deletions with uid
//! preconditions; both under expectations and capped at [`BURST_REPLICAS`].

use std::collections::HashMap;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::ResourceExt;

use super::eligibility::{add_daemon_tolerations, pin_to_node};
use super::history::HASH_LABEL;
use super::DaemonSetError;
use crate::claim::OwnerInfo;
use crate::ctx::Ctx;
use crate::replicaset::manage::slow_start_batches;

/// Most pods created (and deleted) in one sync (upstream's DaemonSet `BurstReplicas`).
pub const BURST_REPLICAS: usize = 250;

/// The daemon pod of `ds` for `node` at revision `hash` (upstream `CreatePodTemplate` +
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn new_pod(ds: &DaemonSet, owner: &OwnerInfo, hash: &str, node: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let mut spec = template.spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    let prefix: String = owner.name.chars().take(57).collect();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner.controller_ref()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn pod_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// Deletes `delete` (names, with their uids in `uids`) and creates a pod on each node of
/// `create_on`, under expectations for `key`.
#[allow(clippy::too_many_arguments)]
pub async fn sync_nodes(
    ctx: &Ctx,
    ds: &DaemonSet,
    key: &str,
    owner: &OwnerInfo,
    hash: &str,
    delete: &[String],
    uids: &HashMap<String, String>,
    create_on: &[String],
) -> Result<(), DaemonSetError> {
    let ns = owner.namespace.as_str();
    let delete = &delete[..delete.len().min(BURST_REPLICAS)];
    let create_on = &create_on[..create_on.len().min(BURST_REPLICAS)];
    ctx.expectations
        .expect(key, create_on.len(), delete.iter().map(|n| pod_key(ns, n)));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut first_err: Option<DaemonSetError> = None;

    let deletions = join_all(delete.iter().map(|name| {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uids.get(name).cloned(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api = &api;
        async move { (name, api.delete(name, &dp).await) }
    }))
    .await;
    for (name, r) in deletions {
        match r {
            Ok(_) => {
                tracing::info!(daemonset = %owner.name, pod = %name, "deleted pod");
                ctx.event(
                    ds,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                );
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                ctx.expectations.deletion_observed(key, &pod_key(ns, name));
            }
            Err(source) => {
                ctx.expectations.deletion_observed(key, &pod_key(ns, name));
                ctx.event(
                    ds,
                    true,
                    "FailedDelete",
                    format!("Error deleting: {source}"),
                );
                first_err.get_or_insert(DaemonSetError::Api {
                    what: format!("delete pod {name}"),
                    source,
                });
            }
        }
    }

    let mut next = 0;
    let mut skipped = 0;
    for batch in slow_start_batches(create_on.len(), 1) {
        let nodes = &create_on[next..next + batch];
        next += batch;
        if first_err.is_some() {
            skipped += batch;
            continue;
        }
        let results = join_all(nodes.iter().map(|node| {
            let pod = new_pod(ds, owner, hash, node);
            let api = &api;
            async move { (node, api.create(&PostParams::default(), &pod).await) }
        }))
        .await;
        for (node, r) in results {
            match r {
                Ok(p) => ctx.event(
                    ds,
                    false,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                ),
                Err(source) => {
                    ctx.expectations.creation_observed(key);
                    ctx.event(
                        ds,
                        true,
                        "FailedCreate",
                        format!("Error creating: {source}"),
                    );
                    first_err.get_or_insert(DaemonSetError::Api {
                        what: format!("create pod on node {node}"),
                        source,
                    });
                }
            }
        }
    }
    // Creations never attempted will never be observed.
    for _ in 0..skipped {
        ctx.expectations.creation_observed(key);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemonset::eligibility::target_node;
    use serde_json::json;

    #[test]
    fn daemon_pod_shape() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "logs", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "logs"}}, "template": {
                "metadata": {"labels": {"app": "logs"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}],
                         "nodeSelector": {"disk": "ssd"}}}}
        }))
        .expect("ds");
        let p = new_pod(&ds, &OwnerInfo::of(&ds), "h1", "n2");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("logs-"));
        let l = p.metadata.labels.as_ref().expect("labels");
        assert_eq!((l["app"].as_str(), l[HASH_LABEL].as_str()), ("logs", "h1"));
        assert_eq!(p.metadata.annotations.as_ref().expect("ann")["a"], "b");
        let r = &p.metadata.owner_references.as_ref().expect("refs")[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller),
            ("DaemonSet", "logs", Some(true))
        );
        assert_eq!(target_node(&p).as_deref(), Some("n2"));
        let spec = p.spec.as_ref().expect("spec");
        assert!(spec.node_name.is_none(), "the scheduler binds it");
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(6));
        assert_eq!(
            spec.node_selector.as_ref().expect("selector")["disk"],
            "ssd"
        );
    }
}
