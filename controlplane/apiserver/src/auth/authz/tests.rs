//! The authorizer against a real `SqliteStore`: bootstrap policy, the watch-maintained index
//! (a grant is honoured the moment its write returns), the Node authorizer, escalation checks
//! and the access reviews.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::auth::user::{AUTHENTICATED, NODES};
use crate::handlers::encode;
use crate::registry;
use kennel_store::SqliteStore;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    z: Arc<Authorizer>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    reconcile_bootstrap_policy(store.as_ref()).await.unwrap();
    let z = Authorizer::start(store.clone()).await.unwrap();
    Fixture {
        _dir: dir,
        store,
        z,
    }
}

fn def(plural: &str) -> &'static ResourceDef {
    registry::RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.group != "metrics.k8s.io")
        .unwrap()
}

async fn put(store: &dyn Store, plural: &str, obj: Value) {
    let d = def(plural);
    let ns = obj["metadata"]["namespace"].as_str();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let key = d.key(ns, name);
    match store.get(&key).await.unwrap() {
        Some(kv) => {
            store
                .update(&key, encode(&obj), Some(kv.mod_revision))
                .await
                .unwrap();
        }
        None => {
            store.create(&key, encode(&obj)).await.unwrap();
        }
    }
}

fn res(
    user: &UserInfo,
    verb: &str,
    ns: &str,
    group: &str,
    resource: &str,
    name: &str,
) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        namespace: ns.into(),
        api_group: group.into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allow(_))
}

fn role_binding(ns: &str, name: &str, kind: &str, role: &str, user: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]})
}

#[tokio::test]
async fn grants_are_seen_the_moment_they_are_written() {
    let f = fixture().await;
    let jane = UserInfo::new("jane", &[]);
    let list = res(&jane, "list", "default", "", "pods", "");
    match f.z.authorize(&list).await {
        Decision::NoOpinion(r) => assert_eq!(r, ""),
        d => panic!("{d:?}"),
    }
    // Written, then decided at once: the catch-up makes it allowed.
    put(
        f.store.as_ref(),
        "rolebindings",
        role_binding("default", "jane-view", "ClusterRole", "view", "jane"),
    )
    .await;
    assert_eq!(
        f.z.authorize(&list).await,
        Decision::Allow(
            r#"RBAC: allowed by RoleBinding "default/jane-view" of ClusterRole "view" to User "jane""#
                .into()
        )
    );
    assert!(!allowed(
        &f.z.authorize(&res(&jane, "delete", "default", "", "pods", "p"))
            .await
    ));
    assert!(!allowed(
        &f.z.authorize(&res(&jane, "list", "other", "", "pods", ""))
            .await
    ));
    assert!(!allowed(
        &f.z.authorize(&res(&jane, "get", "default", "", "secrets", "s"))
            .await
    ));
    // Removed: allowed requests never wait for the index (no store access on the allow path),
    // so a revocation takes effect once the watch delivers it (as upstream's informer cache).
    let key = def("rolebindings").key(Some("default"), "jane-view");
    let (_, rev) = f.store.delete(&key, None).await.unwrap();
    let deadline = tokio::time::Instant::now() + cache::CATCH_UP;
    while allowed(&f.z.authorize(&list).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revocation not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(f.z.applied_revision() >= rev);
}

#[tokio::test]
async fn bootstrap_bindings_apply() {
    let f = fixture().await;
    let jane = UserInfo::new("jane", &[]);
    let path = |user: &UserInfo, p: &str| Attributes {
        user: user.clone(),
        verb: "get".into(),
        path: p.into(),
        ..Default::default()
    };
    assert!(allowed(&f.z.authorize(&path(&jane, "/api/v1")).await));
    assert!(allowed(&f.z.authorize(&path(&jane, "/healthz")).await));
    let anon = UserInfo::anonymous();
    assert!(allowed(&f.z.authorize(&path(&anon, "/version")).await));
    assert!(!allowed(&f.z.authorize(&path(&anon, "/api")).await));
    let ssar = res(
        &jane,
        "create",
        "",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
    );
    assert!(allowed(&f.z.authorize(&ssar).await));
    let sched = UserInfo::new("system:kube-scheduler", &[]);
    assert!(!allowed(
        &f.z.authorize(&res(&sched, "create", "a", "", "pods", "p"))
            .await
    ));
    let mut bind = res(&sched, "create", "a", "", "pods", "p");
    bind.subresource = "binding".into();
    assert!(allowed(&f.z.authorize(&bind).await));
    let kcm = UserInfo::new("system:kube-controller-manager", &[]);
    assert!(allowed(
        &f.z.authorize(&res(&kcm, "create", "a", "apps", "replicasets", ""))
            .await
    ));
    let admin = UserInfo::new("kubernetes-admin", &[crate::auth::user::MASTERS]);
    assert!(allowed(
        &f.z.authorize(&res(&admin, "delete", "", "", "nodes", "n"))
            .await
    ));
    // Reconciling again changes nothing and keeps additions.
    let before = f.store.current_revision().await.unwrap();
    reconcile_bootstrap_policy(f.store.as_ref()).await.unwrap();
    assert_eq!(f.store.current_revision().await.unwrap(), before);
    let crb = def("clusterrolebindings").key(None, "cluster-admin");
    let kv = f.store.get(&crb).await.unwrap().unwrap();
    let mut obj: Value = serde_json::from_slice(&kv.value).unwrap();
    obj["subjects"] = json!([{"kind": "User", "name": "root"}]);
    f.store
        .update(&crb, encode(&obj), Some(kv.mod_revision))
        .await
        .unwrap();
    reconcile_bootstrap_policy(f.store.as_ref()).await.unwrap();
    let kv = f.store.get(&crb).await.unwrap().unwrap();
    let obj: Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(obj["subjects"].as_array().unwrap().len(), 2, "{obj}");
}

fn pod(ns: &str, name: &str, node: &str, secret: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
}

#[tokio::test]
async fn node_reads_only_what_its_pods_use() {
    let f = fixture().await;
    let n1 = UserInfo::new("system:node:n1", &[NODES]);
    let n2 = UserInfo::new("system:node:n2", &[NODES]);
    put(f.store.as_ref(), "pods", pod("a", "web", "n1", "tls")).await;
    let get = |u: &UserInfo| res(u, "get", "a", "", "secrets", "tls");
    assert!(allowed(&f.z.authorize(&get(&n1)).await));
    let d = f.z.authorize(&get(&n2)).await;
    assert_eq!(
        d,
        Decision::NoOpinion("no relationship found between node 'n2' and this object".into())
    );
    assert_eq!(
        crate::auth::filter::forbidden_text(
            &get(&n2),
            "no relationship found between node 'n2' and this object"
        ),
        r#"secrets "tls" is forbidden: User "system:node:n2" cannot get resource "secrets" in API group "" in the namespace "a": no relationship found between node 'n2' and this object"#
    );
    // The pod moves to n2 (a new pod object with the same name).
    put(f.store.as_ref(), "pods", pod("a", "web", "n2", "tls")).await;
    assert!(allowed(&f.z.authorize(&get(&n2)).await));
    assert!(!allowed(&f.z.authorize(&get(&n1)).await));
    // A member of system:nodes without a node name.
    let odd = UserInfo::new("kubelet", &[NODES]);
    assert_eq!(
        f.z.authorize(&res(&odd, "get", "", "", "nodes", "x")).await,
        Decision::NoOpinion(r#"unknown node for user "kubelet""#.into())
    );
}

#[tokio::test]
async fn escalation_is_refused() {
    let f = fixture().await;
    let jane = UserInfo::new("jane", &[]);
    put(
        f.store.as_ref(),
        "rolebindings",
        role_binding("a", "jane-admin", "ClusterRole", "admin", "jane"),
    )
    .await;
    // A Role within what she holds in `a`: fine; in another namespace: refused.
    let role = |ns: &str, verbs: Value, resources: Value| {
        json!({"metadata": {"name": "r", "namespace": ns},
            "rules": [{"verbs": verbs, "apiGroups": [""], "resources": resources}]})
    };
    let roles = def("roles");
    f.z.check_escalation(
        &jane,
        roles,
        Some("a"),
        &role("a", json!(["get", "list"]), json!(["pods"])),
    )
    .await
    .unwrap();
    let err =
        f.z.check_escalation(
            &jane,
            roles,
            Some("b"),
            &role("b", json!(["get"]), json!(["pods"])),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"jane\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]}"
    );
    // Binding cluster-admin is refused; binding `edit` (which she holds in `a`) is fine.
    let rbs = def("rolebindings");
    let err =
        f.z.check_escalation(
            &jane,
            rbs,
            Some("a"),
            &role_binding("a", "x", "ClusterRole", "cluster-admin", "bob"),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("rolebindings.rbac.authorization.k8s.io \"x\" is forbidden: user \"jane\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#),
        "{text}"
    );
    f.z.check_escalation(
        &jane,
        rbs,
        Some("a"),
        &role_binding("a", "x", "ClusterRole", "edit", "bob"),
    )
    .await
    .unwrap();
    // A binding to a missing role.
    let err =
        f.z.check_escalation(
            &jane,
            rbs,
            Some("a"),
            &role_binding("a", "x", "Role", "nope", "bob"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"rolebindings.rbac.authorization.k8s.io "x" is forbidden: role.rbac.authorization.k8s.io "nope" not found"#
    );
    // `bind` on cluster-admin (by name) lets her bind it without holding it; `escalate` lets her
    // write any ClusterRole.
    put(
        f.store.as_ref(),
        "clusterroles",
        json!({"metadata": {"name": "binder"}, "rules": [
            {"verbs": ["bind"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": ["cluster-admin"]},
            {"verbs": ["escalate"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"]}]}),
    )
    .await;
    put(
        f.store.as_ref(),
        "rolebindings",
        role_binding("a", "jane-binder", "ClusterRole", "binder", "jane"),
    )
    .await;
    f.z.check_escalation(
        &jane,
        rbs,
        Some("a"),
        &role_binding("a", "x", "ClusterRole", "cluster-admin", "bob"),
    )
    .await
    .unwrap();
    // ...but only in `a` (the RoleBinding's namespace), and not a ClusterRoleBinding.
    let crbs = def("clusterrolebindings");
    let mut crb = role_binding("", "x", "ClusterRole", "cluster-admin", "bob");
    crb["metadata"] = json!({"name": "x"});
    assert!(f.z.check_escalation(&jane, crbs, None, &crb).await.is_err());
    // Masters are never checked.
    let admin = UserInfo::new("root", &[crate::auth::user::MASTERS]);
    f.z.check_escalation(&admin, crbs, None, &crb)
        .await
        .unwrap();
    // The aggregation rule needs full authority.
    let agg = json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}});
    put(
        f.store.as_ref(),
        "clusterrolebindings",
        json!({"metadata": {"name": "jane-esc"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "carl"}]}),
    )
    .await;
    let carl = UserInfo::new("carl", &[]);
    let err =
        f.z.check_escalation(&carl, def("clusterroles"), None, &agg)
            .await
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"clusterroles.rbac.authorization.k8s.io "agg" is forbidden: must have cluster-admin privileges to use the aggregationRule"#
    );
}

fn review_def(plural: &str) -> &'static ResourceDef {
    registry::find("authorization.k8s.io", "v1", plural).unwrap()
}

#[tokio::test]
async fn access_reviews() {
    let f = fixture().await;
    let jane = UserInfo::new("jane", &[]);
    put(
        f.store.as_ref(),
        "rolebindings",
        role_binding("a", "jane-view", "ClusterRole", "view", "jane"),
    )
    .await;
    let ssar = |ra: Value| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": ra}});
    let out =
        f.z.access_review(
            &jane,
            review_def("selfsubjectaccessreviews"),
            None,
            &ssar(json!({"namespace": "a", "verb": "list", "resource": "pods"})),
        )
        .await
        .unwrap();
    assert_eq!(out["status"]["allowed"], true, "{out}");
    assert_eq!(out["kind"], "SelfSubjectAccessReview");
    let out =
        f.z.access_review(
            &jane,
            review_def("selfsubjectaccessreviews"),
            None,
            &ssar(json!({"namespace": "a", "verb": "delete", "resource": "pods"})),
        )
        .await
        .unwrap();
    assert_eq!(out["status"], json!({"allowed": false}));
    let out =
        f.z.access_review(
            &jane,
            review_def("selfsubjectaccessreviews"),
            None,
            &json!({"spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}),
        )
        .await
        .unwrap();
    assert_eq!(out["status"]["allowed"], true);
    assert!(f
        .z
        .access_review(
            &jane,
            review_def("selfsubjectaccessreviews"),
            None,
            &json!({"spec": {}})
        )
        .await
        .is_err());
    // SubjectAccessReview for someone else; the local one must stay in its namespace.
    let sar = json!({"spec": {"user": "jane", "groups": [AUTHENTICATED], "resourceAttributes": {"namespace": "a", "verb": "get", "resource": "pods", "name": "p"}}});
    let admin = UserInfo::new("root", &[crate::auth::user::MASTERS]);
    let out =
        f.z.access_review(&admin, review_def("subjectaccessreviews"), None, &sar)
            .await
            .unwrap();
    assert_eq!(out["status"]["allowed"], true);
    assert!(out["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("jane-view"));
    assert!(f
        .z
        .access_review(
            &admin,
            review_def("subjectaccessreviews"),
            None,
            &json!({"spec": {"resourceAttributes": {"verb": "get"}}})
        )
        .await
        .is_err());
    let mut lsar = sar.clone();
    lsar["metadata"] = json!({"namespace": "a"});
    let out =
        f.z.access_review(
            &admin,
            review_def("localsubjectaccessreviews"),
            Some("a"),
            &lsar,
        )
        .await
        .unwrap();
    assert_eq!(out["status"]["allowed"], true);
    assert!(f
        .z
        .access_review(
            &admin,
            review_def("localsubjectaccessreviews"),
            Some("b"),
            &lsar
        )
        .await
        .is_err());
    // Rules review (`kubectl auth can-i --list`).
    let out =
        f.z.access_review(
            &jane,
            review_def("selfsubjectrulesreviews"),
            None,
            &json!({"spec": {"namespace": "a"}}),
        )
        .await
        .unwrap();
    let rr = out["status"]["resourceRules"].as_array().unwrap();
    assert!(
        rr.iter().any(
            |r| r["resources"].as_array().unwrap().contains(&json!("pods"))
                && r["verbs"].as_array().unwrap().contains(&json!("list"))
        ),
        "{out}"
    );
    assert!(rr
        .iter()
        .any(|r| r["resources"] == json!(["selfsubjectaccessreviews", "selfsubjectrulesreviews"])));
    assert!(out["status"]["nonResourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["nonResourceURLs"]
            .as_array()
            .unwrap()
            .contains(&json!("/healthz"))));
    assert_eq!(out["status"]["incomplete"], false);
    let out =
        f.z.access_review(
            &jane,
            review_def("selfsubjectrulesreviews"),
            None,
            &json!({"spec": {"namespace": "b"}}),
        )
        .await
        .unwrap();
    assert!(!out["status"]["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resources"].as_array().unwrap().contains(&json!("pods"))));
}

#[tokio::test]
async fn dropping_the_authorizer_ends_its_watch() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let z = Authorizer::start(store.clone()).await.unwrap();
    assert!(SqliteStore::open(dir.path()).is_err(), "open twice");
    drop(z);
    drop(store);
    // The follower let go of its store watch, so nothing keeps the database open.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while let Err(e) = SqliteStore::open(dir.path()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store still held: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
