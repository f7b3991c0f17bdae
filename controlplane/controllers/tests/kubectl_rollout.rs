//! The real kubectl drives a Deployment through the controller manager: `rollout status`,
//! `rollout history`, `rollout undo` (back to revision 1's template, as revision 3 reusing its
//! ReplicaSet), `rollout pause` (a template change does not roll) and `resume` (it does),
//! `scale` and `rollout restart`.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, K};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams};
use kube::ResourceExt;

const T: Duration = Duration::from_secs(30);

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kc
spec:
  replicas: 2
  selector:
    matchLabels: {app: kc}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: kc}
    spec:
      containers:
      - name: app
        image: busybox:1
"#;

impl K {
    async fn rollout_done(&self) {
        let out = self
            .ok(&["rollout", "status", "deployment/kc", "--timeout=30s"])
            .await;
        assert!(out.contains("successfully rolled out"), "{out}");
    }
}

fn image(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn revision(rs: &ReplicaSet) -> &str {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .map(String::as_str)
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_rollout_lifecycle() {
    let c = Cluster::start().await;
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().unwrap(),
    };
    let manifest = c.dir.path().join("kc.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let list = || async {
        rss.list(&ListParams::default().labels("app=kc"))
            .await
            .expect("list rs")
            .items
    };

    k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    k.rollout_done().await;
    k.ok(&["set", "image", "deployment/kc", "app=busybox:2"])
        .await;
    k.rollout_done().await;
    let history = k.ok(&["rollout", "history", "deployment/kc"]).await;
    let revs: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revs, ["1", "2"], "{history}");
    let detail = k
        .ok(&["rollout", "history", "deployment/kc", "--revision=1"])
        .await;
    assert!(detail.contains("busybox:1"), "{detail}");

    // Undo: the revision-1 ReplicaSet becomes revision 3, its history records 1.
    let rev1 = list()
        .await
        .into_iter()
        .find(|r| revision(r) == "1")
        .expect("rev 1 rs");
    k.ok(&["rollout", "undo", "deployment/kc"]).await;
    k.rollout_done().await;
    let rs = eventually(T, "revision 3 on the old RS", || async {
        let rs = rss.get(&rev1.name_any()).await.ok()?;
        (revision(&rs) == "3").then_some(rs)
    })
    .await;
    assert_eq!(
        rs.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(list().await.len(), 2, "undo reuses the old ReplicaSet");
    let d = deps.get("kc").await.unwrap();
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "3");
    let history = k.ok(&["rollout", "history", "deployment/kc"]).await;
    assert!(
        history.contains('2')
            && history.contains('3')
            && !history.lines().any(|l| l.starts_with("1 ")),
        "{history}"
    );

    // Paused: a template change does not roll; resumed: it does.
    k.ok(&["rollout", "pause", "deployment/kc"]).await;
    k.ok(&["set", "image", "deployment/kc", "app=busybox:3"])
        .await;
    let gen = deps.get("kc").await.unwrap().metadata.generation;
    eventually(T, "paused generation observed", || async {
        let d = deps.get("kc").await.ok()?;
        (d.status?.observed_generation == gen).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        list().await.iter().all(|r| image(r) != "busybox:3"),
        "a paused deployment rolled"
    );
    let d = deps.get("kc").await.unwrap();
    let p = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(p.reason.as_deref(), Some("DeploymentPaused"));
    k.ok(&["rollout", "resume", "deployment/kc"]).await;
    k.rollout_done().await;
    let rs3 = list()
        .await
        .into_iter()
        .find(|r| image(r) == "busybox:3")
        .expect("busybox:3 rs");
    assert_eq!(
        (revision(&rs3), rs3.spec.as_ref().unwrap().replicas),
        ("4", Some(2))
    );

    // Scale.
    k.ok(&["scale", "deployment/kc", "--replicas=4"]).await;
    k.rollout_done().await;
    eventually(T, "4 available", || async {
        let s = deps.get("kc").await.ok()?.status?;
        (s.available_replicas == Some(4)).then_some(())
    })
    .await;

    // Restart: a new ReplicaSet (revision 5) with the restartedAt annotation.
    k.ok(&["rollout", "restart", "deployment/kc"]).await;
    k.rollout_done().await;
    let rs5 = list()
        .await
        .into_iter()
        .find(|r| revision(r) == "5")
        .expect("revision 5 rs");
    let tpl_ann = rs5
        .spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap_or_default();
    assert!(
        tpl_ann.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{tpl_ann:?}"
    );
    assert_eq!(rs5.spec.as_ref().unwrap().replicas, Some(4));
    let s = deps.get("kc").await.unwrap().status.unwrap();
    assert_eq!(
        (s.replicas, s.updated_replicas, s.available_replicas),
        (Some(4), Some(4), Some(4))
    );
}
