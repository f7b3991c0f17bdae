//! The Node authorizer (upstream's `plugin/pkg/auth/authorizer/node`, with the parts of the
//! NodeRestriction admission plugin that can be decided from the request alone): a node agent
//! `system:node:<n>` in `system:nodes` reads only the pods bound to it and the Secrets and
//! ConfigMaps those pods use, gets only the PersistentVolumeClaims they use (by name, and the
//! generated `<pod>-<volume>` claims of ephemeral volumes) and the PersistentVolumes those claims
//! are bound to ([`super::volumes`]), updates only those claims' status, requests tokens only
//! for their ServiceAccounts, writes only its own Node, Lease and its pods' status; the rest of
//! upstream's static node rules apply as they are. Everything else is NoOpinion (RBAC still
//! decides; the bootstrap `system:node` role is bound to nobody, as upstream).

use serde_json::Value;

use super::index::Index;
use super::rbac::{rules_allow, PolicyRule};
use crate::auth::Attributes;

/// Kind of an object a pod refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    /// The pod itself.
    Pod,
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
    /// A PersistentVolumeClaim.
    Pvc,
    /// A ServiceAccount.
    ServiceAccount,
}

/// An object a bound pod refers to: kind, namespace, name.
pub type RefKey = (RefKind, String, String);

/// A bound pod's node and everything it refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    /// `spec.nodeName`.
    pub node: String,
    /// The pod and what it uses (deduplicated).
    pub refs: Vec<RefKey>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The node and references of a pod object; `None` for a pod not bound to a node.
pub fn pod_refs(pod: &Value) -> Option<PodRefs> {
    let node = str_at(pod, &["spec", "nodeName"])?.to_string();
    let ns = str_at(pod, &["metadata", "namespace"])
        .unwrap_or("default")
        .to_string();
    let name = str_at(pod, &["metadata", "name"])?.to_string();
    let spec = &pod["spec"];
    let mut refs: Vec<RefKey> = vec![(RefKind::Pod, ns.clone(), name.clone())];
    let mut add = |kind: RefKind, n: Option<&str>| {
        if let Some(n) = n {
            refs.push((kind, ns.clone(), n.to_string()));
        }
    };
    if let Some(sa) = str_at(spec, &["serviceAccountName"]) {
        add(RefKind::ServiceAccount, Some(sa));
    }
    for s in items(spec, "imagePullSecrets") {
        add(RefKind::Secret, str_at(s, &["name"]));
    }
    for c in ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| items(spec, k))
    {
        for e in items(c, "env") {
            add(
                RefKind::Secret,
                str_at(e, &["valueFrom", "secretKeyRef", "name"]),
            );
            add(
                RefKind::ConfigMap,
                str_at(e, &["valueFrom", "configMapKeyRef", "name"]),
            );
        }
        for e in items(c, "envFrom") {
            add(RefKind::Secret, str_at(e, &["secretRef", "name"]));
            add(RefKind::ConfigMap, str_at(e, &["configMapRef", "name"]));
        }
    }
    for vol in items(spec, "volumes") {
        add(RefKind::Secret, str_at(vol, &["secret", "secretName"]));
        add(RefKind::ConfigMap, str_at(vol, &["configMap", "name"]));
        add(
            RefKind::Pvc,
            str_at(vol, &["persistentVolumeClaim", "claimName"]),
        );
        if vol.get("ephemeral").is_some() {
            if let Some(vname) = str_at(vol, &["name"]) {
                add(RefKind::Pvc, Some(&format!("{name}-{vname}")));
            }
        }
        for src in items(&vol["projected"], "sources") {
            add(RefKind::Secret, str_at(src, &["secret", "name"]));
            add(RefKind::ConfigMap, str_at(src, &["configMap", "name"]));
        }
        // Volume plugins with secret references (upstream's graph follows them too).
        for plugin in [
            "azureFile",
            "cephfs",
            "cinder",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
            "csi",
        ] {
            let p = &vol[plugin];
            add(RefKind::Secret, str_at(p, &["secretName"]));
            add(RefKind::Secret, str_at(p, &["secretRef", "name"]));
            add(
                RefKind::Secret,
                str_at(p, &["nodePublishSecretRef", "name"]),
            );
        }
    }
    refs.sort();
    refs.dedup();
    Some(PodRefs { node, refs })
}

/// The static rules of `system:node` (upstream's `NodeRules`).
pub fn node_rules() -> Vec<PolicyRule> {
    let r = PolicyRule::new;
    vec![
        r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        r(&["get", "list", "watch"], &[""], &["services"]),
        r(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        r(&["update", "patch"], &[""], &["nodes/status"]),
        r(&["update", "patch"], &[""], &["nodes"]),
        r(
            &["create", "update", "patch"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        r(&["get", "list", "watch"], &[""], &["pods"]),
        r(&["create", "delete"], &[""], &["pods"]),
        r(&["update", "patch"], &[""], &["pods/status"]),
        r(&["create"], &[""], &["pods/eviction"]),
        r(&["get", "list", "watch"], &[""], &["secrets", "configmaps"]),
        r(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        r(&["get"], &[""], &["endpoints"]),
        r(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        r(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        r(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        r(
            &["update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        r(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
        r(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        r(
            &["get", "list", "watch"],
            &["storage.k8s.io"],
            &["csidrivers"],
        ),
        r(&["create"], &[""], &["serviceaccounts/token"]),
    ]
}

/// A Node authorizer decision: `Ok(())` allows, `Err(reason)` is NoOpinion.
pub type NodeDecision = Result<(), String>;

fn no(reason: impl Into<String>) -> NodeDecision {
    Err(reason.into())
}

fn related(idx: &Index, node: &str, kind: RefKind, a: &Attributes) -> NodeDecision {
    if a.name.is_empty() {
        return no("No Object name found");
    }
    let key = (kind, a.namespace.clone(), a.name.clone());
    if idx.node_has(node, &key) {
        Ok(())
    } else {
        no(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

/// Upstream's `authorizeReadNamespacedObject`.
fn read_namespaced(idx: &Index, node: &str, kind: RefKind, a: &Attributes) -> NodeDecision {
    if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return no("can only read resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot read subresource");
    }
    if a.namespace.is_empty() {
        return no("can only read namespaced object of this type");
    }
    related(idx, node, kind, a)
}

/// Upstream's `authorizeGet`.
fn get_only(idx: &Index, node: &str, kind: RefKind, a: &Attributes) -> NodeDecision {
    if a.verb != "get" {
        return no("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot get subresource");
    }
    related(idx, node, kind, a)
}

/// Upstream's `authorizeGet` of a PersistentVolume: a claim of a pod on `node` is bound to it.
fn get_volume(idx: &Index, node: &str, a: &Attributes) -> NodeDecision {
    if a.verb != "get" {
        return no("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot get subresource");
    }
    if a.name.is_empty() {
        return no("No Object name found");
    }
    if idx.node_has_volume(node, &a.name) {
        Ok(())
    } else {
        no(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

/// Decides a request by node `node` (the user is known to be a node).
pub fn authorize(
    idx: &Index,
    static_rules: &[PolicyRule],
    node: &str,
    a: &Attributes,
) -> NodeDecision {
    if a.resource_request {
        match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "secrets") => return read_namespaced(idx, node, RefKind::Secret, a),
            ("", "configmaps") => return read_namespaced(idx, node, RefKind::ConfigMap, a),
            ("", "persistentvolumeclaims") => {
                if a.subresource == "status" {
                    // Upstream's `authorizeStatusUpdate` (kubelet records a finished expansion).
                    if !matches!(a.verb.as_str(), "update" | "patch") {
                        return no("can only get/update/patch this type");
                    }
                    return related(idx, node, RefKind::Pvc, a);
                }
                return get_only(idx, node, RefKind::Pvc, a);
            }
            ("", "persistentvolumes") => return get_volume(idx, node, a),
            ("", "serviceaccounts") => {
                if a.verb != "create" || a.name.is_empty() {
                    return no("can only create tokens for individual service accounts");
                }
                if a.subresource != "token" {
                    return no("can only create token subresource of serviceaccount");
                }
                return related(idx, node, RefKind::ServiceAccount, a);
            }
            ("coordination.k8s.io", "leases") => {
                if !matches!(
                    a.verb.as_str(),
                    "get" | "create" | "update" | "patch" | "delete"
                ) {
                    return no("can only get, create, update, patch, or delete a node lease");
                }
                if a.namespace != "kube-node-lease" {
                    return no(
                        "can only access leases in the \"kube-node-lease\" system namespace",
                    );
                }
                if a.verb != "create" && a.name != node {
                    return no(
                        "can only access node lease with the same name as the requesting node",
                    );
                }
                return Ok(());
            }
            ("", "pods") => match (a.verb.as_str(), a.subresource.as_str()) {
                ("get", "") => return related(idx, node, RefKind::Pod, a),
                ("list" | "watch", "") => return Ok(()),
                ("delete", "") | ("update" | "patch", "status") | ("create", "eviction") => {
                    return related(idx, node, RefKind::Pod, a)
                }
                ("create", "") => {
                    return no("node may only create mirror pods, which kennel does not support")
                }
                _ => {}
            },
            // NodeRestriction: a node modifies only its own Node object.
            ("", "nodes")
                if matches!(a.verb.as_str(), "update" | "patch")
                    && matches!(a.subresource.as_str(), "" | "status") =>
            {
                if a.name != node {
                    return no(format!(
                        "node '{node}' is not allowed to modify node '{}'",
                        a.name
                    ));
                }
                return Ok(());
            }
            _ => {}
        }
    }
    if rules_allow(a, static_rules) {
        Ok(())
    } else {
        Err(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "namespace": "a"},
        "spec": {"nodeName": "n1", "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "envsec", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "envcm"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "volsec"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}, {"serviceAccountToken": {"path": "token"}}]}}
            ]}})
    }

    #[test]
    fn references_of_a_pod() {
        let refs = pod_refs(&pod()).unwrap();
        assert_eq!(refs.node, "n1");
        let names: Vec<(RefKind, &str)> =
            refs.refs.iter().map(|(k, _, n)| (*k, n.as_str())).collect();
        for want in [
            (RefKind::Pod, "web"),
            (RefKind::Secret, "pull"),
            (RefKind::Secret, "envsec"),
            (RefKind::Secret, "volsec"),
            (RefKind::ConfigMap, "envcm"),
            (RefKind::ConfigMap, "kube-root-ca.crt"),
            (RefKind::Pvc, "data"),
            (RefKind::Pvc, "web-e"),
            (RefKind::ServiceAccount, "builder"),
        ] {
            assert!(names.contains(&want), "{want:?} in {names:?}");
        }
        let mut unbound = pod();
        unbound["spec"]["nodeName"] = Value::Null;
        assert_eq!(pod_refs(&unbound), None);
    }

    fn attrs(verb: &str, group: &str, ns: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::new("system:node:n1", &[crate::auth::user::NODES]),
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn node_authorizer_cases() {
        let mut idx = Index::default();
        idx.apply_put(
            "/registry/core/pods/a/web",
            &serde_json::to_vec(&pod()).unwrap(),
        );
        let rules = node_rules();
        let check = |node: &str, a: Attributes| authorize(&idx, &rules, node, &a);
        let ok = |r: NodeDecision| r.is_ok();
        // Objects of its pods: yes; others: no, with upstream's reason.
        assert!(ok(check(
            "n1",
            attrs("get", "", "a", "secrets", "", "volsec")
        )));
        assert!(ok(check(
            "n1",
            attrs("watch", "", "a", "secrets", "", "envsec")
        )));
        assert!(ok(check(
            "n1",
            attrs("get", "", "a", "configmaps", "", "kube-root-ca.crt")
        )));
        assert_eq!(
            check("n2", attrs("get", "", "a", "secrets", "", "volsec")),
            Err("no relationship found between node 'n2' and this object".into())
        );
        assert_eq!(
            check("n1", attrs("get", "", "a", "secrets", "", "other")),
            Err("no relationship found between node 'n1' and this object".into())
        );
        assert_eq!(
            check("n1", attrs("list", "", "a", "secrets", "", "")),
            Err("No Object name found".into())
        );
        assert_eq!(
            check("n1", attrs("update", "", "a", "secrets", "", "volsec")),
            Err("can only read resources of this type".into())
        );
        assert!(ok(check(
            "n1",
            attrs("get", "", "a", "persistentvolumeclaims", "", "data")
        )));
        assert!(!ok(check(
            "n1",
            attrs("list", "", "a", "persistentvolumeclaims", "", "")
        )));
        // Tokens only for its pods' ServiceAccounts.
        assert!(ok(check(
            "n1",
            attrs("create", "", "a", "serviceaccounts", "token", "builder")
        )));
        assert!(!ok(check(
            "n1",
            attrs("create", "", "a", "serviceaccounts", "token", "default")
        )));
        assert!(!ok(check(
            "n1",
            attrs("get", "", "a", "serviceaccounts", "", "builder")
        )));
        // Pods: get its own, list/watch all, status and delete of its own.
        assert!(ok(check("n1", attrs("get", "", "a", "pods", "", "web"))));
        assert!(!ok(check("n2", attrs("get", "", "a", "pods", "", "web"))));
        assert!(ok(check("n2", attrs("list", "", "", "pods", "", ""))));
        assert!(ok(check(
            "n1",
            attrs("patch", "", "a", "pods", "status", "web")
        )));
        assert!(!ok(check(
            "n2",
            attrs("patch", "", "a", "pods", "status", "web")
        )));
        assert!(ok(check("n1", attrs("delete", "", "a", "pods", "", "web"))));
        assert!(ok(check(
            "n1",
            attrs("create", "", "a", "pods", "eviction", "web")
        )));
        assert!(!ok(check(
            "n1",
            attrs("create", "", "a", "pods", "exec", "web")
        )));
        // Its own Node and Lease.
        assert!(ok(check(
            "n1",
            attrs("patch", "", "", "nodes", "status", "n1")
        )));
        assert!(!ok(check(
            "n1",
            attrs("patch", "", "", "nodes", "status", "n2")
        )));
        assert!(ok(check("n1", attrs("create", "", "", "nodes", "", ""))));
        assert!(ok(check("n1", attrs("list", "", "", "nodes", "", ""))));
        assert!(!ok(check("n1", attrs("delete", "", "", "nodes", "", "n1"))));
        assert!(ok(check(
            "n1",
            attrs(
                "update",
                "coordination.k8s.io",
                "kube-node-lease",
                "leases",
                "",
                "n1"
            )
        )));
        assert!(!ok(check(
            "n1",
            attrs(
                "update",
                "coordination.k8s.io",
                "kube-node-lease",
                "leases",
                "",
                "n2"
            )
        )));
        assert!(!ok(check(
            "n1",
            attrs(
                "get",
                "coordination.k8s.io",
                "kube-system",
                "leases",
                "",
                "n1"
            )
        )));
        // Events and other static rules.
        assert!(ok(check("n1", attrs("create", "", "a", "events", "", ""))));
        assert!(ok(check(
            "n1",
            attrs("create", "events.k8s.io", "a", "events", "", "")
        )));
        assert!(ok(check("n1", attrs("list", "", "", "services", "", ""))));
        assert_eq!(
            check("n1", attrs("list", "apps", "", "deployments", "", "")),
            Err(String::new())
        );
        // The pod going away (or moving) drops the relationship.
        idx.apply_delete("/registry/core/pods/a/web");
        assert!(authorize(
            &idx,
            &rules,
            "n1",
            &attrs("get", "", "a", "secrets", "", "volsec")
        )
        .is_err());
    }

    /// pod → claim → volume: a node gets the claims of its pods and the volumes bound to them,
    /// nothing listed, nothing of another node's pods, and a bind made later counts at once.
    #[test]
    fn claims_and_volumes_of_bound_pods() {
        let mut idx = Index::default();
        let put = |idx: &mut Index, key: &str, v: Value| {
            idx.apply_put(key, &serde_json::to_vec(&v).unwrap())
        };
        put(&mut idx, "/registry/core/pods/a/web", pod());
        let mut other = pod();
        other["metadata"]["name"] = "db".into();
        other["spec"]["nodeName"] = "n2".into();
        other["spec"]["volumes"] = serde_json::json!([
            {"name": "d", "persistentVolumeClaim": {"claimName": "db-data"}}
        ]);
        put(&mut idx, "/registry/core/pods/a/db", other);
        let bind = |idx: &mut Index, claim: &str, pv: &str| {
            put(
                idx,
                &format!("/registry/core/persistentvolumeclaims/a/{claim}"),
                serde_json::json!({"metadata": {"name": claim, "namespace": "a"}, "spec": {"volumeName": pv}}),
            );
            put(
                idx,
                &format!("/registry/core/persistentvolumes/{pv}"),
                serde_json::json!({"metadata": {"name": pv}, "spec": {"claimRef": {"namespace": "a", "name": claim}}}),
            );
        };
        bind(&mut idx, "data", "pv-data");
        bind(&mut idx, "web-e", "pv-eph");
        bind(&mut idx, "db-data", "pv-db");
        let rules = node_rules();
        let check = |idx: &Index, node: &str, a: Attributes| authorize(idx, &rules, node, &a);
        let pv = |verb: &str, name: &str| attrs(verb, "", "", "persistentvolumes", "", name);
        let pvc = |verb: &str, sub: &str, name: &str| {
            attrs(verb, "", "a", "persistentvolumeclaims", sub, name)
        };
        let none = |n: &str| {
            Err(format!(
                "no relationship found between node '{n}' and this object"
            ))
        };
        for (node, claim, vol) in [
            ("n1", "data", "pv-data"),
            ("n1", "web-e", "pv-eph"),
            ("n2", "db-data", "pv-db"),
        ] {
            assert_eq!(
                check(&idx, node, pvc("get", "", claim)),
                Ok(()),
                "{node} {claim}"
            );
            assert_eq!(check(&idx, node, pv("get", vol)), Ok(()), "{node} {vol}");
        }
        // Another node's pod's storage: no.
        assert_eq!(check(&idx, "n1", pvc("get", "", "db-data")), none("n1"));
        assert_eq!(check(&idx, "n1", pv("get", "pv-db")), none("n1"));
        assert_eq!(check(&idx, "n2", pv("get", "pv-data")), none("n2"));
        assert_eq!(check(&idx, "n1", pv("get", "unknown")), none("n1"));
        // Only get, by name; status updates of its claims only.
        for verb in ["list", "watch", "update", "delete", "create"] {
            assert_eq!(
                check(
                    &idx,
                    "n1",
                    pv(verb, if verb == "list" { "" } else { "pv-data" })
                ),
                Err("can only get individual resources of this type".into()),
                "{verb}"
            );
            assert_eq!(
                check(&idx, "n1", pvc(verb, "", "data")),
                Err("can only get individual resources of this type".into()),
                "{verb}"
            );
        }
        assert_eq!(
            check(&idx, "n1", pv("get", "")),
            Err("No Object name found".into())
        );
        assert_eq!(
            check(
                &idx,
                "n1",
                attrs("get", "", "", "persistentvolumes", "status", "pv-data")
            ),
            Err("cannot get subresource".into())
        );
        assert_eq!(check(&idx, "n1", pvc("patch", "status", "data")), Ok(()));
        assert_eq!(
            check(&idx, "n1", pvc("patch", "status", "db-data")),
            none("n1")
        );
        assert_eq!(
            check(&idx, "n1", pvc("get", "status", "data")),
            Err("can only get/update/patch this type".into())
        );
        // A claim unbound (or rebound elsewhere) closes its old volume; a later bind opens it.
        put(
            &mut idx,
            "/registry/core/persistentvolumeclaims/a/data",
            serde_json::json!({"metadata": {"name": "data", "namespace": "a"}, "spec": {}}),
        );
        assert_eq!(check(&idx, "n1", pv("get", "pv-data")), none("n1"));
        assert_eq!(check(&idx, "n1", pvc("get", "", "data")), Ok(()));
        bind(&mut idx, "data", "pv-late");
        assert_eq!(check(&idx, "n1", pv("get", "pv-late")), Ok(()));
        assert_eq!(check(&idx, "n1", pv("get", "pv-data")), none("n1"));
        // The pod moving to another node moves its storage with it.
        let mut moved = pod();
        moved["spec"]["nodeName"] = "n2".into();
        put(&mut idx, "/registry/core/pods/a/web", moved);
        assert_eq!(check(&idx, "n1", pv("get", "pv-late")), none("n1"));
        assert_eq!(check(&idx, "n2", pv("get", "pv-late")), Ok(()));
    }
}
