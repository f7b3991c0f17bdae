//! The bootstrap policy (upstream's `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`): the
//! default ClusterRoles and ClusterRoleBindings, reconciled at start as upstream's
//! `reconcile`: missing objects are created; objects annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` get missing rules, subjects, labels
//! and aggregation selectors added (nothing is removed). The aggregated `admin`/`edit`/`view`
//! also get their aggregated rules computed here, so they are right before the aggregation
//! controller runs.
//! The objects themselves are in [`super::bootstrap`].

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::bootstrap::{cluster_role_bindings, cluster_roles, BootstrapBinding, BootstrapRole};
use super::rbac::PolicyRule;
use crate::handlers::{decode, encode};
use crate::registry;
use kennel_store::{Store, StoreError};

/// Annotation marking objects the reconciler may update.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// Label of the bootstrap objects.
pub const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert(BOOTSTRAPPING.into(), "rbac-defaults".into());
    json!({
        "name": name,
        "uid": uuid::Uuid::new_v4().to_string(),
        "creationTimestamp": crate::defaults::now_rfc3339(),
        "labels": l,
        "annotations": {AUTOUPDATE: "true"},
    })
}

/// The ClusterRole object of a bootstrap role.
pub fn role_object(r: &BootstrapRole) -> Value {
    let mut obj = json!({
        "kind": "ClusterRole",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": meta(r.name, &r.labels),
        "rules": r.rules,
    });
    if !r.aggregate_from.is_empty() {
        let selectors: Vec<Value> = r
            .aggregate_from
            .iter()
            .map(|(k, v)| json!({"matchLabels": {*k: *v}}))
            .collect();
        obj["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    }
    obj
}

/// The ClusterRoleBinding object of a bootstrap binding.
pub fn binding_object(b: &BootstrapBinding) -> Value {
    let subjects: Vec<Value> = b.2.iter().map(subject).collect();
    let mut obj = json!({
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": meta(b.0, &[]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": b.1},
    });
    if !subjects.is_empty() {
        obj["subjects"] = Value::Array(subjects);
    }
    obj
}

fn subject(s: &(&str, &str, &str)) -> Value {
    let (kind, name, ns) = *s;
    match kind {
        "ServiceAccount" => json!({"kind": kind, "name": name, "namespace": ns}),
        _ => json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}),
    }
}

/// Adds what `want` has and `cur` lacks (labels, annotations, rules, subjects, aggregation
/// selectors); true when `cur` changed.
fn merge(cur: &mut Value, want: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        if let Some(w) = want["metadata"][field].as_object() {
            if !cur["metadata"][field].is_object() {
                cur["metadata"][field] = json!({});
            }
            let m = cur["metadata"][field]
                .as_object_mut()
                .expect("object just set");
            for (k, v) in w {
                if field == "annotations" && k == AUTOUPDATE {
                    continue;
                }
                if !m.contains_key(k) {
                    m.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
    }
    if let Some(want_rules) = want["rules"].as_array() {
        let have: Vec<PolicyRule> =
            serde_json::from_value(cur["rules"].clone()).unwrap_or_default();
        let wanted: Vec<PolicyRule> =
            serde_json::from_value(Value::Array(want_rules.clone())).unwrap_or_default();
        let (_, missing) = super::rbac::covers(&have, &wanted);
        if !missing.is_empty() {
            let mut rules = have;
            // Add whole wanted rules that are not covered (not their broken-down pieces).
            for w in &wanted {
                if !super::rbac::covers(&rules, std::slice::from_ref(w)).0 {
                    rules.push(w.clone());
                }
            }
            cur["rules"] = serde_json::to_value(rules).unwrap_or(Value::Null);
            changed = true;
        }
    }
    for (list, path) in [
        ("subjects", None),
        ("clusterRoleSelectors", Some("aggregationRule")),
    ] {
        let (w, c) = match path {
            None => (&want[list], &mut cur[list]),
            Some(p) => {
                if want[p].is_null() {
                    continue;
                }
                if !cur[p].is_object() {
                    cur[p] = json!({});
                }
                (&want[p][list], &mut cur[p][list])
            }
        };
        let Some(w) = w.as_array() else { continue };
        if !c.is_array() {
            *c = json!([]);
        }
        let arr = c.as_array_mut().expect("array just set");
        for item in w {
            if !arr.contains(item) {
                arr.push(item.clone());
                changed = true;
            }
        }
    }
    changed
}

async fn reconcile_one(store: &dyn Store, key: &str, want: Value) -> Result<(), StoreError> {
    for _ in 0..5 {
        let Some(kv) = store.get(key).await? else {
            match store.create(key, encode(&want)).await {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        };
        let Ok(mut cur) = decode(&kv) else {
            tracing::warn!(key, "unreadable bootstrap RBAC object left alone");
            return Ok(());
        };
        if cur["metadata"]["annotations"][AUTOUPDATE].as_str() == Some("false") {
            return Ok(());
        }
        if !merge(&mut cur, &want) {
            return Ok(());
        }
        match store.update(key, encode(&cur), Some(kv.mod_revision)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(
        key,
        "bootstrap RBAC object kept changing; left for the next start"
    );
    Ok(())
}

/// Creates missing bootstrap ClusterRoles and ClusterRoleBindings and adds missing rules and
/// subjects to those still marked for auto-update.
pub async fn reconcile(store: &dyn Store) -> Result<(), StoreError> {
    let roles = registry::find("rbac.authorization.k8s.io", "v1", "clusterroles")
        .expect("clusterroles registered");
    let bindings = registry::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .expect("clusterrolebindings registered");
    for r in cluster_roles() {
        reconcile_one(store, &roles.key(None, r.name), role_object(&r)).await?;
    }
    for b in cluster_role_bindings() {
        reconcile_one(store, &bindings.key(None, b.0), binding_object(&b)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bootstrap::{role, TO_ADMIN, TO_EDIT};
    use super::*;

    #[test]
    fn aggregated_roles_hold_the_aggregated_rules() {
        let roles = cluster_roles();
        let get = |n: &str| roles.iter().find(|r| r.name == n).unwrap().rules.clone();
        let view = get("view");
        let edit = get("edit");
        let admin = get("admin");
        assert_eq!(view, get("system:aggregate-to-view"));
        assert!(super::super::rbac::covers(&edit, &view).0);
        assert!(super::super::rbac::covers(&admin, &edit).0);
        assert!(super::super::rbac::covers(&admin, &get("system:aggregate-to-admin")).0);
        assert!(
            !super::super::rbac::covers(&view, &[PolicyRule::new(&["get"], &[""], &["secrets"])]).0
        );
        assert!(
            !super::super::rbac::covers(
                &edit,
                &[PolicyRule::new(
                    &["create"],
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings"]
                )]
            )
            .0
        );
        let obj = role_object(roles.iter().find(|r| r.name == "edit").unwrap());
        assert_eq!(
            obj["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"][TO_EDIT],
            "true"
        );
        assert_eq!(obj["metadata"]["labels"][TO_ADMIN], "true");
        assert_eq!(obj["metadata"]["labels"][BOOTSTRAPPING], "rbac-defaults");
        assert_eq!(obj["metadata"]["annotations"][AUTOUPDATE], "true");
    }

    #[test]
    fn merge_adds_only_what_is_missing() {
        let want = role_object(&role(
            "x",
            vec![PolicyRule::new(&["get"], &[""], &["pods"])],
        ));
        let mut cur = json!({"metadata": {"name": "x", "labels": {"mine": "yes"}, "annotations": {AUTOUPDATE: "true"}},
            "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(merge(&mut cur, &want));
        assert_eq!(cur["rules"].as_array().unwrap().len(), 2);
        assert_eq!(cur["metadata"]["labels"]["mine"], "yes");
        assert!(!merge(&mut cur, &want));
        let b = binding_object(&(
            "cluster-admin",
            "cluster-admin",
            vec![("Group", "system:masters", "")],
        ));
        let mut cur = json!({"metadata": {"name": "cluster-admin"}, "roleRef": b["roleRef"].clone(),
            "subjects": [{"kind": "User", "name": "me"}]});
        assert!(merge(&mut cur, &b));
        assert_eq!(cur["subjects"].as_array().unwrap().len(), 2);
    }
}
