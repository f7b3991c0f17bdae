//! The garbage collector against the real API server and controller manager, with real kubectl:
//! foreground, orphan and background cascading, any kind owning any other, dangling owners, and
//! a custom resource owning a Deployment.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, K};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn rs_manifest(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox:1}}]}}\n"
    )
}

async fn apply(k: &K, dir: &std::path::Path, name: &str, text: &str) {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    k.ok(&["apply", "-f", p.to_str().unwrap()]).await;
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_deletion() {
    let c = Cluster::start().await;
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");

    // Foreground: the ReplicaSet stays, with the finalizer, until its pods are gone.
    apply(&k, dir.path(), "fg", &rs_manifest("fg")).await;
    eventually(T, "fg pods", || async {
        (pods_of(&pods, "fg").await.len() == 2).then_some(())
    })
    .await;
    k.ok(&["delete", "rs", "fg", "--cascade=foreground", "--wait=false"])
        .await;
    let rs = sets.get("fg").await.expect("owner still there");
    assert!(rs.metadata.deletion_timestamp.is_some());
    assert_eq!(rs.finalizers(), &["foregroundDeletion".to_string()]);
    eventually(T, "fg pods and then fg gone", || async {
        (pods_of(&pods, "fg").await.is_empty() && sets.get_opt("fg").await.ok()?.is_none())
            .then_some(())
    })
    .await;

    // Orphan: the pods stay, without owner references.
    apply(&k, dir.path(), "or", &rs_manifest("or")).await;
    eventually(T, "or pods", || async {
        (pods_of(&pods, "or").await.len() == 2).then_some(())
    })
    .await;
    k.ok(&["delete", "rs", "or", "--cascade=orphan"]).await;
    assert!(sets.get_opt("or").await.unwrap().is_none());
    let left = pods_of(&pods, "or").await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|p| p.owner_references().is_empty()));

    // Background (kubectl's default): the owner goes at once, the pods after it.
    apply(&k, dir.path(), "bg", &rs_manifest("bg")).await;
    eventually(T, "bg pods", || async {
        (pods_of(&pods, "bg").await.len() == 2).then_some(())
    })
    .await;
    k.ok(&["delete", "rs", "bg"]).await;
    eventually(T, "bg pods collected", || async {
        pods_of(&pods, "bg").await.is_empty().then_some(())
    })
    .await;

    // Any kind owns any other: a ConfigMap owned by a Pod goes with it.
    let owner = left[0].clone();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "owned-by-pod", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
            "name": owner.name_any(), "uid": owner.uid().unwrap()}]}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    k.ok(&["delete", "pod", &owner.name_any()]).await;
    eventually(T, "the pod's ConfigMap collected", || async {
        cms.get_opt("owned-by-pod")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // An owner that does not exist (the right name, another uid) is absent: collected.
    let live: ConfigMap = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "real-owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let dangling: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dangling", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "real-owner", "uid": "00000000-0000-0000-0000-000000000000"}]}
    }))
    .unwrap();
    let kept: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kept", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "real-owner", "uid": live.uid().unwrap()}]}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &dangling).await.unwrap();
    cms.create(&PostParams::default(), &kept).await.unwrap();
    eventually(T, "the dangling dependent collected", || async {
        cms.get_opt("dangling").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cms.get_opt("kept").await.unwrap().is_some());

    // A custom resource (the book's Website) owning a Deployment still cascades.
    apply(
        &k,
        dir.path(),
        "crd",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: websites.extensions.example.com}\nspec:\n  group: extensions.example.com\n  scope: Namespaced\n  names: {plural: websites, singular: website, kind: Website}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    )
    .await;
    eventually(T, "websites served", || async {
        let out = common::kubectl(&k.kubeconfig, k.cache.path(), &["get", "websites"]).await;
        out.status.success().then_some(())
    })
    .await;
    apply(
        &k,
        dir.path(),
        "site",
        "apiVersion: extensions.example.com/v1\nkind: Website\nmetadata: {name: kubia}\nspec: {gitRepo: \"https://github.com/luksa/kubia-website-example.git\"}\n",
    )
    .await;
    let uid = k
        .ok(&["get", "website", "kubia", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "kubia-site", "ownerReferences": [{"apiVersion": "extensions.example.com/v1",
            "kind": "Website", "name": "kubia", "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "site"}},
            "template": {"metadata": {"labels": {"app": "site"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    eventually(T, "the site's pod", || async {
        (pods_of(&pods, "site").await.len() == 1).then_some(())
    })
    .await;
    k.ok(&["delete", "website", "kubia"]).await;
    eventually(
        T,
        "the Website's Deployment, ReplicaSet and pod collected",
        || async {
            (deploys.get_opt("kubia-site").await.ok()?.is_none()
                && pods_of(&pods, "site").await.is_empty())
            .then_some(())
        },
    )
    .await;
}
