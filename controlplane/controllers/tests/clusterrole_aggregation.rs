//! The ClusterRole aggregation controller against the real API server (TLS + token, SQLite):
//! an aggregating role follows the roles its selectors match as they appear, change labels and
//! go away, and the bootstrap `admin`/`edit`/`view` stay as the bootstrap policy computed them.

// The module is compiled into this test from its source (its `crate::` paths resolve to these
// re-exports), so the test does not depend on the crate root listing it.
mod ctx {
    pub use kennel_controllers::ctx::*;
}
mod informer {
    pub use kennel_controllers::informer::*;
}
mod selector {
    pub use kennel_controllers::selector::*;
}
#[allow(dead_code)]
#[path = "../src/clusterrole_aggregation.rs"]
mod clusterrole_aggregation;

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kennel_apiserver::testing::TestApiServer;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn verbs(role: &ClusterRole) -> Vec<String> {
    role.rules
        .iter()
        .flatten()
        .flat_map(|r| r.verbs.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregated_rules_follow_the_selected_roles() {
    let s = TestApiServer::start().await;
    let ctx = Arc::new(kennel_controllers::Ctx::new(s.client.clone()));
    let ctrl = tokio::spawn(clusterrole_aggregation::controller(ctx));
    let api: Api<ClusterRole> = Api::all(s.client.clone());
    let create = |v: serde_json::Value| {
        let api = api.clone();
        async move {
            let r: ClusterRole = serde_json::from_value(v).unwrap();
            api.create(&PostParams::default(), &r)
                .await
                .expect("create clusterrole");
        }
    };
    let rule = |verb: &str| json!({"verbs": [verb], "apiGroups": [""], "resources": ["pods"]});
    create(json!({"metadata": {"name": "monitoring"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-monitoring": "true"}}]}}))
    .await;
    create(json!({"metadata": {"name": "monitoring-pods", "labels": {"aggregate-to-monitoring": "true"}},
        "rules": [rule("get"), rule("list")]}))
    .await;
    eventually(T, "rules of monitoring-pods aggregated", || async {
        let r = api.get("monitoring").await.ok()?;
        (verbs(&r) == ["get", "list"]).then_some(())
    })
    .await;
    // A second matching role: the union (no duplicates).
    create(json!({"metadata": {"name": "monitoring-more", "labels": {"aggregate-to-monitoring": "true"}},
        "rules": [rule("list"), rule("watch")]}))
    .await;
    eventually(T, "union of both roles", || async {
        let r = api.get("monitoring").await.ok()?;
        (verbs(&r) == ["list", "watch", "get"]).then_some(())
    })
    .await;
    // A role losing its label drops out; a deleted role too.
    api.patch(
        "monitoring-pods",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"aggregate-to-monitoring": null}}})),
    )
    .await
    .expect("unlabel");
    eventually(T, "unlabelled role dropped", || async {
        let r = api.get("monitoring").await.ok()?;
        (verbs(&r) == ["list", "watch"]).then_some(())
    })
    .await;
    api.delete("monitoring-more", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(T, "deleted role dropped", || async {
        let r = api.get("monitoring").await.ok()?;
        verbs(&r).is_empty().then_some(())
    })
    .await;
    // The bootstrap aggregated roles already hold their rules and keep them.
    let edit = api.get("edit").await.expect("edit");
    assert!(verbs(&edit).contains(&"create".to_string()));
    let admin = api.get("admin").await.expect("admin");
    assert!(admin.rules.iter().flatten().any(|r| r
        .resources
        .iter()
        .flatten()
        .any(|x| x == "rolebindings")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get("edit").await.unwrap().rules, edit.rules);
    ctrl.abort();
}
