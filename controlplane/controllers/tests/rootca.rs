//! The root-CA publisher against the real API server in-process: every namespace (the
//! bootstrap ones and a new one) gets `kube-root-ca.crt` with the cluster CA; a deleted one is
//! recreated and a changed one put back.

// Until `controllers/src/lib.rs` declares `pub mod rootca`, the module is compiled into this
// test directly (it needs nothing from the crate but its dependencies).
#[path = "../src/rootca.rs"]
#[allow(dead_code)]
mod rootca;

mod common;

use std::time::Duration;

use common::eventually;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kennel_apiserver::testing::TestApiServer;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::ResourceExt;

const T: Duration = Duration::from_secs(20);

async fn published(client: &kube::Client, ns: &str, pem: &str) -> ConfigMap {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pem = pem.to_string();
    eventually(T, &format!("{ns}/kube-root-ca.crt with the CA"), || {
        let api = api.clone();
        let pem = pem.clone();
        async move {
            let cm = api.get_opt("kube-root-ca.crt").await.ok()??;
            let data = cm.data.clone()?;
            let described = cm
                .annotations()
                .get("kubernetes.io/description")
                .is_some_and(|d| d.starts_with("Contains a CA bundle"));
            (data.len() == 1 && data.get("ca.crt") == Some(&pem) && described).then_some(cm)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_the_cluster_ca() {
    let TestApiServer {
        api,
        dir: _dir,
        client,
    } = TestApiServer::start().await;
    let pem = api.ca_pem.clone();
    assert!(
        pem.contains("BEGIN CERTIFICATE"),
        "the test server has a CA"
    );

    // The PEM kennel passes is the one its clients trust.
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let from_cfg = rootca::ca_pem_from(&cfg).expect("root certs in the admin kubeconfig");
    assert_eq!(from_cfg.trim(), pem.trim());

    let publisher = tokio::spawn(rootca::run(client.clone(), pem.clone()));

    for ns in ["default", "kube-system", "kube-public"] {
        published(&client, ns, &pem).await;
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let fresh = Namespace {
        metadata: ObjectMeta {
            name: Some("fresh".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &fresh)
        .await
        .unwrap();
    let first = published(&client, "fresh", &pem).await;

    // Deleted: recreated.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "fresh");
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    let again = eventually(T, "kube-root-ca.crt recreated", || {
        let cms = cms.clone();
        let old = first.uid();
        async move {
            let cm = cms.get_opt("kube-root-ca.crt").await.ok()??;
            (cm.uid() != old).then_some(cm)
        }
    })
    .await;
    assert_eq!(again.data.as_ref().unwrap()["ca.crt"], pem);

    // Changed: put back (the extra key goes, the annotation returns).
    let mut tampered = cms.get("kube-root-ca.crt").await.unwrap();
    tampered.data = Some(
        [
            ("ca.crt".to_string(), "not a CA".to_string()),
            ("extra".to_string(), "x".to_string()),
        ]
        .into(),
    );
    tampered.metadata.annotations = None;
    cms.replace("kube-root-ca.crt", &PostParams::default(), &tampered)
        .await
        .unwrap();
    published(&client, "fresh", &pem).await;

    publisher.abort();
}
