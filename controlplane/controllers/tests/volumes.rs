//! The PersistentVolume controllers and storage admission against the real API server, with the
//! real kubectl: the book's static flow (a PV and a PVC bind, `kubectl get pv,pvc`, the claim
//! deleted leaves the Retain volume Released), smallest fitting volume, selectors, the default
//! class, `WaitForFirstConsumer` handed to a simulated external provisioner, pvc-protection.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, K};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn pv(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": format!("/tmp/{name}")}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn pvc(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

async fn claim_bound_to(claims: &Api<PersistentVolumeClaim>, name: &str) -> String {
    eventually(T, &format!("{name} bound"), || async {
        let c = claims.get(name).await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound"))
            .then(|| c.spec.as_ref()?.volume_name.clone())
            .flatten()
    })
    .await
}

async fn volume_phase(pvs: &Api<PersistentVolume>, name: &str, phase: &str) {
    eventually(T, &format!("{name} {phase}"), || async {
        let v = pvs.get(name).await.ok()?;
        (v.status.as_ref()?.phase.as_deref() == Some(phase)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_binding_release_and_protection() {
    let c = Cluster::start().await;
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().unwrap(),
    };
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();

    // The book's static flow through kubectl.
    let yaml = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: mongodb-pv}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce, ReadOnlyMany]\n  persistentVolumeReclaimPolicy: Retain\n  hostPath: {path: /tmp/mongodb}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: mongodb-pvc}\nspec:\n  resources: {requests: {storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n";
    let f = c.dir.path().join("mongo.yaml");
    std::fs::write(&f, yaml).unwrap();
    k.ok(&["apply", "-f", f.to_str().unwrap()]).await;
    assert_eq!(claim_bound_to(&claims, "mongodb-pvc").await, "mongodb-pv");
    volume_phase(&pvs, "mongodb-pv", "Bound").await;
    let out = k.ok(&["get", "pv,pvc"]).await;
    assert!(
        out.contains("CAPACITY   ACCESS MODES   RECLAIM POLICY   STATUS   CLAIM"),
        "{out}"
    );
    assert!(out.contains("VOLUMEATTRIBUTESCLASS"), "{out}");
    let pv_line = out
        .lines()
        .find(|l| l.starts_with("persistentvolume/mongodb-pv"))
        .unwrap();
    let w: Vec<&str> = pv_line.split_whitespace().collect();
    assert_eq!(
        &w[1..6],
        ["1Gi", "RWO,ROX", "Retain", "Bound", "default/mongodb-pvc"],
        "{out}"
    );
    let pvc_line = out
        .lines()
        .find(|l| l.starts_with("persistentvolumeclaim/mongodb-pvc"))
        .unwrap();
    let w: Vec<&str> = pvc_line.split_whitespace().collect();
    assert_eq!(&w[1..5], ["Bound", "mongodb-pv", "1Gi", "RWO,ROX"], "{out}");
    let claim = claims.get("mongodb-pvc").await.unwrap();
    assert!(claim
        .finalizers()
        .contains(&"kubernetes.io/pvc-protection".to_string()));
    assert!(claim
        .annotations()
        .contains_key("pv.kubernetes.io/bind-completed"));

    // Smallest fitting volume; a selector.
    pvs.create(&pp, &pv("big", "10Gi", json!({})))
        .await
        .unwrap();
    pvs.create(&pp, &pv("fit", "2Gi", json!({}))).await.unwrap();
    pvs.create(
        &pp,
        &pv(
            "gold",
            "5Gi",
            json!({"metadata": {"labels": {"tier": "gold"}}}),
        ),
    )
    .await
    .unwrap();
    claims
        .create(&pp, &pvc("small", "1500Mi", json!({})))
        .await
        .unwrap();
    assert_eq!(claim_bound_to(&claims, "small").await, "fit");
    claims
        .create(
            &pp,
            &pvc(
                "sel",
                "1Gi",
                json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(claim_bound_to(&claims, "sel").await, "gold");

    // pvc-protection: a claim used by a (scheduled) pod stays until the pod is gone.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "mongodb"}, "spec": {
        "containers": [{"name": "m", "image": "mongo"}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "mongodb-pvc"}}]}}))
    .unwrap();
    pods.create(&pp, &pod).await.unwrap();
    eventually(T, "pod scheduled", || async {
        pods.get("mongodb").await.ok()?.spec?.node_name.map(|_| ())
    })
    .await;
    claims
        .delete("mongodb-pvc", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = claims
        .get("mongodb-pvc")
        .await
        .expect("claim held while used");
    assert!(held.metadata.deletion_timestamp.is_some());
    let out = k.ok(&["get", "pvc", "mongodb-pvc"]).await;
    assert!(out.contains("Terminating"), "{out}");
    pods.delete("mongodb", &DeleteParams::default())
        .await
        .unwrap();
    eventually(T, "claim gone", || async {
        claims
            .get_opt("mongodb-pvc")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Released, and Retain keeps it so.
    volume_phase(&pvs, "mongodb-pv", "Released").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = pvs.get("mongodb-pv").await.unwrap();
    assert_eq!(v.status.unwrap().phase.as_deref(), Some("Released"));
    assert!(
        v.spec.unwrap().claim_ref.is_some(),
        "Retain keeps the claimRef"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_class_and_wait_for_first_consumer_provisioning() {
    let c = Cluster::start().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(c.client.clone());
    let pp = PostParams::default();
    let sc = serde_json::from_value(json!({"metadata": {"name": "local-disk", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kennel.dev/local-disk", "volumeBindingMode": "WaitForFirstConsumer"}))
    .unwrap();
    classes.create(&pp, &sc).await.unwrap();
    let created = claims
        .create(&pp, &pvc("data", "1Gi", json!({})))
        .await
        .unwrap();
    assert_eq!(
        created.spec.unwrap().storage_class_name.as_deref(),
        Some("local-disk"),
        "DefaultStorageClass"
    );
    let none = claims
        .create(
            &pp,
            &pvc("none", "1Gi", json!({"spec": {"storageClassName": ""}})),
        )
        .await
        .unwrap();
    assert_eq!(none.spec.unwrap().storage_class_name.as_deref(), Some(""));

    // Pending without the provisioner annotation until the scheduler picks a node.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c1 = claims.get("data").await.unwrap();
    assert_eq!(
        c1.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert!(!c1
        .annotations()
        .contains_key("volume.kubernetes.io/storage-provisioner"));
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "volume.kubernetes.io/selected-node": "fake-node"}}})),
        )
        .await
        .unwrap();
    let c2 = eventually(T, "provisioner annotation", || async {
        let c = claims.get("data").await.ok()?;
        (c.annotations()
            .get("volume.kubernetes.io/storage-provisioner")
            == Some(&"kennel.dev/local-disk".to_string()))
        .then_some(c)
    })
    .await;
    assert_eq!(
        c2.annotations()["volume.beta.kubernetes.io/storage-provisioner"],
        "kennel.dev/local-disk"
    );
    // The simulated provisioner creates the PV pointing at the claim.
    let vol = pv(
        "pvc-provisioned",
        "1Gi",
        json!({"metadata": {"annotations": {"pv.kubernetes.io/provisioned-by": "kennel.dev/local-disk"}},
               "spec": {"storageClassName": "local-disk", "persistentVolumeReclaimPolicy": "Delete",
                        "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                     "namespace": "default", "name": "data", "uid": c2.uid()}}}),
    );
    pvs.create(&pp, &vol).await.unwrap();
    assert_eq!(claim_bound_to(&claims, "data").await, "pvc-provisioned");
    // Deleting the claim releases it (deleting the volume is the provisioner's job).
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    volume_phase(&pvs, "pvc-provisioned", "Released").await;
}
