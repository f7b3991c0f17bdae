//! The controller manager against the real API server (TLS + token, SQLite), with the test
//! kubelet fixture turning pods Running/Ready: ReplicaSet replacement, ranked scale-down,
//! adoption and release; a Deployment rolling update that never exceeds its surge or drops below
//! its availability; the default ServiceAccount of a new namespace.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Cluster};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn owner_uid(p: &Pod) -> Option<String> {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

async fn pods(api: &Api<Pod>, selector: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
}

fn pod_json(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
    }))
    .unwrap()
}

fn rs_json(name: &str, app: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaset_replaces_scales_adopts_and_releases() {
    let c = Cluster::start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let rs = rss
        .create(&PostParams::default(), &rs_json("web", "web", 3))
        .await
        .expect("create rs");
    let uid = rs.uid().unwrap();

    // Three pods, named <rs>-<5 chars>, owned by the ReplicaSet, all ready.
    let first = eventually(T, "3 ready pods", || async {
        let ps = pods(&pods_api, "app=web").await;
        (ps.len() == 3 && ps.iter().all(is_ready)).then_some(ps)
    })
    .await;
    for p in &first {
        let name = p.name_any();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str()),
            ("ReplicaSet", uid.as_str())
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
    eventually(T, "rs status 3/3/3/3", || async {
        let s = rss.get("web").await.ok()?.status?;
        (s.replicas == 3
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = first[0].name_any();
    pods_api
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually(T, "replacement pod", || async {
        let ps = pods(&pods_api, "app=web").await;
        let names: Vec<String> = ps.iter().map(|p| p.name_any()).collect();
        (ps.len() == 3 && !names.contains(&victim) && ps.iter().all(is_ready)).then_some(())
    })
    .await;

    // Scale to 1: the not-ready pod goes first.
    let ps = pods(&pods_api, "app=web").await;
    let unready = ps[1].name_any();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods_api
        .patch_status(&unready, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("mark unready");
    eventually(T, "rs sees 2 ready", || async {
        let s = rss.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(())
    })
    .await;
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale rs");
    let left = eventually(T, "one pod left", || async {
        let ps: Vec<Pod> = pods(&pods_api, "app=web")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (ps.len() == 1).then_some(ps)
    })
    .await;
    assert_ne!(left[0].name_any(), unready, "the not-ready pod was kept");
    assert!(is_ready(&left[0]));

    // Orphans matching a new ReplicaSet's selector are adopted (none created).
    for n in ["orphan-a", "orphan-b"] {
        pods_api
            .create(&PostParams::default(), &pod_json(n, "orphans"))
            .await
            .expect("create orphan");
    }
    eventually(T, "orphans ready", || async {
        let ps = pods(&pods_api, "app=orphans").await;
        (ps.len() == 2 && ps.iter().all(is_ready)).then_some(())
    })
    .await;
    let adopter = rss
        .create(&PostParams::default(), &rs_json("adopter", "orphans", 2))
        .await
        .expect("create adopter");
    let adopter_uid = adopter.uid().unwrap();
    eventually(T, "orphans adopted", || async {
        let ps = pods(&pods_api, "app=orphans").await;
        (ps.len() == 2
            && ps
                .iter()
                .all(|p| owner_uid(p).as_deref() == Some(adopter_uid.as_str())))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ps = pods(&pods_api, "app=orphans").await;
    assert_eq!(
        ps.len(),
        2,
        "adoption must not create pods: {:?}",
        ps.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );

    // A pod relabelled out of the selector is released and replaced.
    pods_api
        .patch(
            "orphan-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "gone"}}})),
        )
        .await
        .expect("relabel");
    eventually(T, "released and replaced", || async {
        let released = pods_api.get("orphan-a").await.ok()?;
        let ps = pods(&pods_api, "app=orphans").await;
        (owner_uid(&released).is_none()
            && ps.len() == 2
            && ps
                .iter()
                .all(|p| owner_uid(p).as_deref() == Some(adopter_uid.as_str())))
        .then_some(())
    })
    .await;
}

fn deployment_json(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
            },
        },
    }))
    .unwrap()
}

async fn rollout_done(api: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(T, "rollout complete", || async {
        let d = api.get(name).await.ok()?;
        let s = d.status.clone()?;
        let gen = d.metadata.generation?;
        (s.observed_generation >= Some(gen)
            && s.replicas == Some(replicas)
            && s.updated_replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            }))
        .then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_rolling_update_respects_surge_and_availability() {
    let c = Cluster::start().await;
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    deps.create(&PostParams::default(), &deployment_json("roll", 3))
        .await
        .expect("create deployment");
    let d = rollout_done(&deps, "roll", 3).await;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"))
        .expect("Available condition");
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );

    // Record every pod event from here on and check the bounds at each state.
    /// Live pods by uid, violations seen, most non-terminating pods seen.
    type Seen = (HashMap<String, Pod>, Vec<String>, usize);
    let state: Arc<Mutex<Seen>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watcher_task = {
        let state = state.clone();
        let api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let stream =
                watcher(api, watcher::Config::default().labels("app=roll")).default_backoff();
            futures::pin_mut!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                let mut st = state.lock().unwrap();
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        st.0.insert(p.uid().unwrap(), p);
                    }
                    watcher::Event::Delete(p) => {
                        st.0.remove(&p.uid().unwrap());
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Init => {}
                }
                let live: Vec<&Pod> =
                    st.0.values()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect();
                let avail = live.iter().filter(|p| is_ready(p)).count();
                let n = live.len();
                if n > 3 + 1 {
                    st.1.push(format!("{n} pods (not terminating) > replicas + maxSurge"));
                }
                if ready_tx.is_none() && avail < 3 {
                    st.1.push(format!("{avail} available < replicas - maxUnavailable"));
                }
                st.2 = st.2.max(n);
            }
        })
    };
    ready_rx.await.expect("watch started");

    deps.patch(
        "roll",
        &PatchParams::default(),
        &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}})),
    )
    .await
    .expect("update template");
    let d = rollout_done(&deps, "roll", 3).await;
    // Old pods' deletions reach the watcher shortly after the status says done.
    let ps: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    eventually(T, "old pods gone", || async {
        let live = pods(&ps, "app=roll").await;
        (live.len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher_task.abort();
    let (violations, max_seen) = {
        let st = state.lock().unwrap();
        (st.1.clone(), st.2)
    };
    assert!(violations.is_empty(), "bounds violated: {violations:?}");
    assert_eq!(max_seen, 4, "the rollout should use its one surge pod");

    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let list = rss
        .list(&ListParams::default().labels("app=roll"))
        .await
        .expect("list rs")
        .items;
    assert_eq!(list.len(), 2);
    let by_rev: BTreeMap<String, (i32, String)> = list
        .iter()
        .map(|r| {
            (
                r.annotations()["deployment.kubernetes.io/revision"].clone(),
                (r.spec.as_ref().unwrap().replicas.unwrap(), r.name_any()),
            )
        })
        .collect();
    assert_eq!(by_rev["1"].0, 0, "old RS scaled to 0");
    assert_eq!(by_rev["2"].0, 3, "new RS at 3");
    for (_, name) in by_rev.values() {
        let rs = list.iter().find(|r| &r.name_any() == name).unwrap();
        let hash = &rs.labels()["pod-template-hash"];
        assert_eq!(name, &format!("roll-{hash}"));
        let sel = rs
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(sel.get("pod-template-hash"), Some(hash));
        assert_eq!(
            rs.annotations()["deployment.kubernetes.io/desired-replicas"],
            "3"
        );
        assert_eq!(
            rs.annotations()["deployment.kubernetes.io/max-replicas"],
            "4"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_service_account_in_new_namespace() {
    let c = Cluster::start().await;
    let nss: Api<Namespace> = Api::all(c.client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
    )
    .unwrap();
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team-a");
    let first = eventually(T, "default serviceaccount", || async {
        sas.get("default").await.ok()
    })
    .await;
    // The bootstrap namespaces get one too.
    let ks: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "kube-system");
    eventually(T, "kube-system default serviceaccount", || async {
        ks.get("default").await.ok()
    })
    .await;
    // Deleted: recreated.
    sas.delete("default", &DeleteParams::default())
        .await
        .expect("delete sa");
    eventually(T, "recreated serviceaccount", || async {
        let sa = sas.get("default").await.ok()?;
        (sa.uid() != first.uid()).then_some(())
    })
    .await;
}
