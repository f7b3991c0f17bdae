//! Owner-reference cascading on delete: with `propagationPolicy` Background or Foreground (the
//! default) the dependents of a deleted owner are deleted too, recursively; with Orphan they lose
//! their owner reference. Done synchronously here, in place of upstream's garbage collector.

use serde_json::Value;

use super::delete::{delete_one, DeleteOpts};
use super::{decode_as, encode_as, ApiState};
use crate::registry::{self, ResourceDef};
use crate::status::ApiError;
use kennel_store::StoreError;

/// What happens to dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete dependents.
    Cascade,
    /// Keep dependents, remove their owner reference.
    Orphan,
}

/// Kinds that can own objects of the listed `(group, plural)` resources.
fn dependents(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "Deployment" => &[("apps", "replicasets")],
        "ReplicaSet" | "ReplicationController" | "Job" => &[("", "pods")],
        // A StatefulSet's claims are its dependents only under `whenDeleted: Delete`, where the
        // controller gives them an owner reference.
        "StatefulSet" => &[
            ("", "pods"),
            ("apps", "controllerrevisions"),
            ("", "persistentvolumeclaims"),
        ],
        "DaemonSet" => &[("", "pods"), ("apps", "controllerrevisions")],
        "CronJob" => &[("batch", "jobs")],
        "Service" | "Endpoints" => &[("discovery.k8s.io", "endpointslices")],
        _ => &[],
    }
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Applies `propagation` to the dependents of the deleted `owner` (of `def`).
pub async fn cascade(
    state: &ApiState,
    def: &'static ResourceDef,
    owner: &Value,
    propagation: Propagation,
    opts: &DeleteOpts,
) -> Result<(), ApiError> {
    let mut queue: Vec<(&'static ResourceDef, Value)> = vec![(def, owner.clone())];
    while let Some((def, owner)) = queue.pop() {
        let (Some(uid), Some(ns)) = (
            owner["metadata"]["uid"].as_str(),
            owner["metadata"]["namespace"].as_str(),
        ) else {
            continue;
        };
        // A custom resource may own objects of any kind (the book's Website owns a Deployment
        // and a Service): every namespaced resource is searched for its dependents.
        let deps: Vec<&'static ResourceDef> = if def.strategy_kind().is_empty() {
            registry::all()
                .into_iter()
                .filter(|r| r.namespaced && !crate::convert::shares_storage(r))
                .collect()
        } else {
            dependents(def.kind)
                .iter()
                .filter_map(|(group, plural)| {
                    registry::all()
                        .into_iter()
                        .find(|r| r.group == *group && r.plural == *plural)
                })
                .collect()
        };
        for dep_def in deps {
            let page = state
                .store
                .list(&dep_def.list_prefix(Some(ns)), 0, None)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            for kv in page.items {
                let obj = decode_as(dep_def, &kv)?;
                if !owned_by(&obj, uid) {
                    continue;
                }
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                match propagation {
                    Propagation::Orphan => {
                        if opts.dry_run {
                            continue;
                        }
                        let mut o = obj.clone();
                        if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"] != uid);
                        }
                        match state
                            .store
                            .update(&kv.key, encode_as(dep_def, &o), Some(kv.mod_revision))
                            .await
                        {
                            Ok(_)
                            | Err(StoreError::NotFound(_))
                            | Err(StoreError::Conflict { .. }) => {}
                            Err(e) => return Err(ApiError::Internal(e.to_string())),
                        }
                    }
                    Propagation::Cascade => {
                        match delete_one(state, dep_def, Some(ns), &name, opts).await {
                            Ok(_) | Err(ApiError::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                        queue.push((dep_def, obj));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads `propagationPolicy` (query or DeleteOptions body) and the legacy `orphanDependents`.
pub fn propagation(query_policy: Option<&str>, body: &Value) -> Result<Propagation, ApiError> {
    let policy = query_policy
        .map(String::from)
        .or_else(|| body["propagationPolicy"].as_str().map(String::from));
    match policy.as_deref() {
        Some("Orphan") => Ok(Propagation::Orphan),
        Some("Background" | "Foreground") => Ok(Propagation::Cascade),
        Some(other) => Err(ApiError::BadRequest(format!(
            "propagationPolicy must be Orphan, Background or Foreground, got {other:?}"
        ))),
        None if body["orphanDependents"] == true => Ok(Propagation::Orphan),
        None => Ok(Propagation::Cascade),
    }
}
