//! The part of upstream's NodeRestriction admission plugin that needs the objects (the rest is
//! decided from the request in [`super::node`]): a node updating a PersistentVolumeClaim's
//! status (kubelet recording a finished volume expansion) may change only `status.capacity`,
//! `status.conditions` and the expansion-recovery fields (`status.allocatedResources`,
//! `status.allocatedResourceStatuses`) — no phase, no metadata, no spec.
//!
//! Called with the final object before it is written ([`admit_update`]); other users, kinds
//! and subresources pass untouched.

use serde_json::Value;

use crate::auth::UserInfo;
use crate::status::ApiError;

/// Status fields a node may change on a claim.
const PVC_STATUS_FIELDS: [&str; 4] = [
    "capacity",
    "conditions",
    "allocatedResources",
    "allocatedResourceStatuses",
];

/// `old` and `new` without what may differ (resourceVersion, managedFields, the node's fields).
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
        for f in PVC_STATUS_FIELDS {
            status.remove(f);
        }
    }
    v
}

/// Dotted paths where `a` and `b` differ (objects compared key by key; other values whole).
fn differing(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let null = Value::Null;
                differing(
                    &path,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Upstream's `admitPVCStatus` for the node `node`: `Err(reason)` names the fields it may not
/// change.
pub fn pvc_status_update(node: &str, old: &Value, new: &Value) -> Result<(), String> {
    let (o, n) = (comparable(old), comparable(new));
    if o == n {
        return Ok(());
    }
    let mut paths = Vec::new();
    differing("", &o, &n, &mut paths);
    Err(format!(
        "node {node:?} is not allowed to update fields other than status.capacity and status.conditions: {}",
        paths.join(", ")
    ))
}

/// NodeRestriction for an update by `user` of `resource` (plural) / `subresource`, with the
/// stored `old` and the final `new`; a refusal is upstream's 403
/// `<resource> "<name>" is forbidden: <reason>`.
pub fn admit_update(
    user: &UserInfo,
    resource: &str,
    subresource: Option<&str>,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if resource != "persistentvolumeclaims" || subresource != Some("status") {
        return Ok(());
    }
    pvc_status_update(node, old, new).map_err(|reason| {
        let name = new["metadata"]["name"].as_str().unwrap_or("");
        ApiError::Forbidden(format!("{resource} {name:?} is forbidden: {reason}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim() -> Value {
        json!({"metadata": {"name": "data", "namespace": "a", "resourceVersion": "5",
            "labels": {"app": "db"}, "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"volumeName": "pv1", "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}})
    }

    fn node() -> UserInfo {
        UserInfo::new("system:node:n1", &[crate::auth::user::NODES])
    }

    #[test]
    fn a_node_changes_only_capacity_and_conditions() {
        let old = claim();
        let mut new = claim();
        new["metadata"]["resourceVersion"] = json!("6");
        new["status"]["capacity"]["storage"] = json!("2Gi");
        new["status"]["conditions"] =
            json!([{"type": "FileSystemResizePending", "status": "False"}]);
        new["status"]["allocatedResources"] = json!({"storage": "2Gi"});
        let sub = Some("status");
        assert!(admit_update(&node(), "persistentvolumeclaims", sub, &old, &new).is_ok());

        let mut phase = new.clone();
        phase["status"]["phase"] = json!("Lost");
        phase["metadata"]["labels"]["app"] = json!("x");
        let err = admit_update(&node(), "persistentvolumeclaims", sub, &old, &phase).unwrap_err();
        assert_eq!(
            err.to_string(),
            "persistentvolumeclaims \"data\" is forbidden: node \"n1\" is not allowed to update fields other than status.capacity and status.conditions: metadata.labels.app, status.phase"
        );
        let mut finalizers = new.clone();
        finalizers["metadata"]["finalizers"] = json!([]);
        assert!(admit_update(&node(), "persistentvolumeclaims", sub, &old, &finalizers).is_err());

        // Other users, resources and subresources are not this plugin's.
        let admin = UserInfo::new("admin", &["system:masters"]);
        assert!(admit_update(&admin, "persistentvolumeclaims", sub, &old, &phase).is_ok());
        assert!(admit_update(&node(), "persistentvolumeclaims", None, &old, &phase).is_ok());
        assert!(admit_update(&node(), "pods", sub, &old, &phase).is_ok());
    }
}
