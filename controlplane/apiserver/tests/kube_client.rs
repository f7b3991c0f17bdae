//! A kube-rs client against the API server (TLS + token from the written kubeconfig):
//! CRUD, watch resume from a resourceVersion, 410 Gone after compaction, paging.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::server::{Backend, TestServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};

const T: Duration = Duration::from_secs(30);

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app".to_string(),
                "kube-test".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), value.to_string())])),
        ..Default::default()
    }
}

async fn next_event<S, K>(s: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(T, s.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event ok")
}

async fn scenario(backend: Backend) {
    let server = TestServer::start(backend).await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // CRUD
    let created = cms
        .create(&PostParams::default(), &cm("one", "1"))
        .await
        .unwrap();
    let rv0: i64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let err = cms
        .create(&PostParams::default(), &cm("one", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    let got = cms.get("one").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["k"], "1");
    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("k".to_string(), "2".to_string())]));
    let replaced = cms
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    // A stale resourceVersion is refused with 409 Conflict.
    let err = cms
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let patched = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["k"], "3");
    assert!(
        patched
            .metadata
            .resource_version
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > replaced
                .metadata
                .resource_version
                .unwrap()
                .parse::<i64>()
                .unwrap()
    );
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    let err = cms.get("one").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );

    // Watch resume from a resourceVersion: replays exactly the changes after it, in order.
    let wp = WatchParams::default().labels("app=kube-test").timeout(60);
    let mut w = cms.watch(&wp, &rv0.to_string()).await.unwrap().boxed();
    assert!(
        matches!(next_event(&mut w).await, WatchEvent::Modified(c) if c.data.as_ref().unwrap()["k"] == "2")
    );
    assert!(
        matches!(next_event(&mut w).await, WatchEvent::Modified(c) if c.data.as_ref().unwrap()["k"] == "3")
    );
    assert!(matches!(next_event(&mut w).await, WatchEvent::Deleted(_)));
    cms.create(&PostParams::default(), &cm("two", "live"))
        .await
        .unwrap();
    assert!(
        matches!(next_event(&mut w).await, WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("two"))
    );

    // Paging: 25 objects in pages of 10.
    for i in 0..25 {
        cms.create(&PostParams::default(), &cm(&format!("page-{i:02}"), "x"))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().labels("app=kube-test").limit(10);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 26);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "key order");

    // 410 Gone: after compaction, watching from the old revision reports Expired.
    let current = server.api.store.current_revision().await.unwrap();
    server.api.store.compact(current).await.unwrap();
    let mut w = cms
        .watch(&WatchParams::default(), &rv0.to_string())
        .await
        .unwrap()
        .boxed();
    match next_event(&mut w).await {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }

    // Server-side apply (approximated as a merge): creates, then updates.
    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("kube-test").force(),
            &Patch::Apply(cm("applied", "a")),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["k"], "a");
    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("kube-test").force(),
            &Patch::Apply(cm("applied", "b")),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["k"], "b");
    let err = cms
        .patch(
            "applied",
            &PatchParams::default(),
            &Patch::Apply(cm("applied", "c")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );

    // Typed pods round-trip with server defaults.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-rs-pod"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    let listed: Vec<Pod> = pods
        .list(&ListParams::default().fields("metadata.name=kube-rs-pod"))
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_sqlite() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_etcd() {
    scenario(Backend::Etcd).await;
}
