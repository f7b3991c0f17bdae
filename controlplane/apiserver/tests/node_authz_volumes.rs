//! The Node authorizer's storage edges through the real HTTP server: a node (client certificate
//! `system:node:node-a` in `system:nodes`, or a token for `node-b`) gets the
//! PersistentVolumeClaims its pods use (by name and the generated claim of an ephemeral volume)
//! and the PersistentVolumes bound to them; another node's pod's claim and volume, lists and
//! writes are 403 with upstream's reasons; a claim bound after its pod was bound opens its
//! volume at once. With kube-rs and with the real kubectl.

mod common;

use std::path::Path;

use common::kubectl::{token_kubeconfig, K};
use common::server::kubectl_bins;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kennel_apiserver::pki::client::{cert_kubeconfig, issue_client_cert, ClientIdentity};
use kennel_apiserver::{ApiServerConfig, RunningApiServer};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const TOKENS: &str = "node-b-token,system:node:node-b,system:node:node-b,\"system:nodes\"\n";

async fn start(dir: &Path) -> RunningApiServer {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    kennel_apiserver::start(ApiServerConfig {
        token_file: Some(tokens),
        // No controller manager creates the namespaces' `default` ServiceAccounts here.
        disable_admission_plugins: vec!["ServiceAccount".into()],
        ..ApiServerConfig::new(dir.join("data"))
    })
    .await
    .expect("start API server")
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn forbidden(r: kube::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert_eq!(s.reason, "Forbidden");
            s.message
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn claim(name: &str, volume: Option<&str>) -> PersistentVolumeClaim {
    obj(json!({"metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}, "volumeName": volume}}))
}

fn volume(name: &str, claim: Option<&str>) -> PersistentVolume {
    let r =
        claim.map(|c| json!({"kind": "PersistentVolumeClaim", "namespace": "default", "name": c}));
    obj(json!({"metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "hostPath": {"path": format!("/tmp/{name}")}, "claimRef": r}}))
}

fn pod(name: &str, node: &str, claims: &[&str], ephemeral: Option<&str>) -> Pod {
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    if let Some(v) = ephemeral {
        volumes.push(
            json!({"name": v, "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}),
        );
    }
    obj(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "volumes": volumes,
            "containers": [{"name": "c", "image": "busybox"}]}}))
}

fn no_relationship(kind: &str, name: &str, node: &str) -> String {
    let scope = if kind == "persistentvolumes" {
        "at the cluster scope".to_string()
    } else {
        "in the namespace \"default\"".to_string()
    };
    format!(
        "{kind} \"{name}\" is forbidden: User \"system:node:{node}\" cannot get resource \"{kind}\" in API group \"\" {scope}: no relationship found between node '{node}' and this object"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_only_their_pods_claims_and_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let api = start(dir.path()).await;
    let admin = client(&api.kubeconfig).await;
    // node-a authenticates with a client certificate signed by the cluster CA, node-b with a token.
    let id = ClientIdentity {
        stem: "node-a",
        user: "system:node:node-a",
        group: Some("system:nodes"),
    };
    let (cert, key) = issue_client_cert(&dir.path().join("data/pki"), &id).unwrap();
    let node_a_kc = dir.path().join("node-a.kubeconfig");
    std::fs::write(
        &node_a_kc,
        cert_kubeconfig(&api.url, &api.ca_pem, id.user, &cert, &key),
    )
    .unwrap();
    let node_a = client(&node_a_kc).await;
    let node_b_kc = token_kubeconfig(&api, dir.path(), "node-b", "node-b-token");
    let node_b = client(&node_b_kc).await;
    let pp = PostParams::default();

    let pvs: Api<PersistentVolume> = Api::all(admin.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    for (pv, c) in [
        ("pv-a", "claim-a"),
        ("pv-b", "claim-b"),
        ("pv-eph", "pod-a-scratch"),
    ] {
        pvs.create(&pp, &volume(pv, Some(c))).await.unwrap();
        pvcs.create(&pp, &claim(c, Some(pv))).await.unwrap();
    }
    // A claim its pod uses before it is bound, and the volume it will be bound to.
    pvcs.create(&pp, &claim("claim-late", None)).await.unwrap();
    pvs.create(&pp, &volume("pv-late", None)).await.unwrap();
    // A bound claim no pod uses.
    pvs.create(&pp, &volume("pv-idle", Some("claim-idle")))
        .await
        .unwrap();
    pvcs.create(&pp, &claim("claim-idle", Some("pv-idle")))
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            "pod-a",
            "node-a",
            &["claim-a", "claim-late"],
            Some("scratch"),
        ),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("pod-b", "node-b", &["claim-b"], None))
        .await
        .unwrap();

    let a_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(node_a.clone(), "default");
    let a_pvs: Api<PersistentVolume> = Api::all(node_a.clone());
    let b_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(node_b.clone(), "default");
    let b_pvs: Api<PersistentVolume> = Api::all(node_b.clone());

    // Its pods' claims (by name and the ephemeral volume's `<pod>-<volume>`) and their volumes.
    for c in ["claim-a", "pod-a-scratch", "claim-late"] {
        assert_eq!(
            a_pvcs.get(c).await.unwrap().metadata.name.as_deref(),
            Some(c)
        );
    }
    for pv in ["pv-a", "pv-eph"] {
        assert_eq!(
            a_pvs.get(pv).await.unwrap().metadata.name.as_deref(),
            Some(pv)
        );
    }
    b_pvcs.get("claim-b").await.unwrap();
    b_pvs.get("pv-b").await.unwrap();

    // The other node's pod's claim and volume, an unused claim and volume: 403.
    assert_eq!(
        forbidden(a_pvcs.get("claim-b").await),
        no_relationship("persistentvolumeclaims", "claim-b", "node-a")
    );
    assert_eq!(
        forbidden(a_pvs.get("pv-b").await),
        no_relationship("persistentvolumes", "pv-b", "node-a")
    );
    assert_eq!(
        forbidden(b_pvs.get("pv-a").await),
        no_relationship("persistentvolumes", "pv-a", "node-b")
    );
    assert_eq!(
        forbidden(b_pvcs.get("pod-a-scratch").await),
        no_relationship("persistentvolumeclaims", "pod-a-scratch", "node-b")
    );
    forbidden(a_pvcs.get("claim-idle").await);
    forbidden(a_pvs.get("pv-idle").await);

    // No lists, no watches, no writes.
    assert_eq!(
        forbidden(a_pvs.list(&ListParams::default()).await),
        "persistentvolumes is forbidden: User \"system:node:node-a\" cannot list resource \"persistentvolumes\" in API group \"\" at the cluster scope: can only get individual resources of this type"
    );
    assert_eq!(
        forbidden(a_pvcs.list(&ListParams::default()).await),
        "persistentvolumeclaims is forbidden: User \"system:node:node-a\" cannot list resource \"persistentvolumeclaims\" in API group \"\" in the namespace \"default\": can only get individual resources of this type"
    );
    let all_pvcs: Api<PersistentVolumeClaim> = Api::all(node_a.clone());
    forbidden(all_pvcs.list(&ListParams::default()).await);
    let label = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    let mp = PatchParams::default();
    forbidden(a_pvs.patch("pv-a", &mp, &label).await);
    forbidden(a_pvcs.patch("claim-a", &mp, &label).await);
    forbidden(a_pvs.create(&pp, &volume("pv-new", None)).await);
    // Status of its own claims (kubelet records an expansion), not of others.
    let status = Patch::Merge(json!({"status": {"conditions": [
        {"type": "FileSystemResizePending", "status": "False"}]}}));
    a_pvcs.patch_status("claim-a", &mp, &status).await.unwrap();
    forbidden(a_pvcs.patch_status("claim-b", &mp, &status).await);

    // The late claim's volume: closed until both sides of the bind are written, then open.
    assert_eq!(
        forbidden(a_pvs.get("pv-late").await),
        no_relationship("persistentvolumes", "pv-late", "node-a")
    );
    pvs.patch(
        "pv-late",
        &mp,
        &Patch::Merge(
            json!({"spec": {"claimRef": {"kind": "PersistentVolumeClaim",
            "namespace": "default", "name": "claim-late"}}}),
        ),
    )
    .await
    .unwrap();
    forbidden(a_pvs.get("pv-late").await);
    pvcs.patch(
        "claim-late",
        &mp,
        &Patch::Merge(json!({"spec": {"volumeName": "pv-late"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        a_pvs.get("pv-late").await.unwrap().metadata.name.as_deref(),
        Some("pv-late")
    );
    forbidden(b_pvs.get("pv-late").await);

    // A claim naming a volume bound to another claim does not open it.
    pvcs.create(&pp, &claim("claim-grab", Some("pv-b")))
        .await
        .unwrap();
    pods.create(&pp, &pod("pod-grab", "node-a", &["claim-grab"], None))
        .await
        .unwrap();
    a_pvcs.get("claim-grab").await.unwrap();
    forbidden(a_pvs.get("pv-b").await);

    // The pod going away closes its storage.
    pods.delete("pod-b", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    forbidden(b_pvs.get("pv-b").await);
    forbidden(b_pvcs.get("claim-b").await);

    // The same through the real kubectl (node-a's certificate kubeconfig).
    let bins = kubectl_bins();
    let k = K {
        bin: &bins[0],
        kubeconfig: node_a_kc,
        cache: dir.path().join("cache"),
    };
    assert_eq!(
        k.ok(&["get", "pv", "pv-a", "-o", "jsonpath={.spec.claimRef.name}"]),
        "claim-a"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pvc",
            "claim-late",
            "-o",
            "jsonpath={.spec.volumeName}"
        ]),
        "pv-late"
    );
    let denied = k.fails(&["get", "pv"]);
    assert!(
        denied.contains(r#"User "system:node:node-a" cannot list resource "persistentvolumes""#),
        "{denied}"
    );
    let denied = k.fails(&["get", "pvc", "claim-b"]);
    assert!(
        denied.contains("no relationship found between node 'node-a' and this object"),
        "{denied}"
    );
}
