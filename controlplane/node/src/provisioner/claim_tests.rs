use super::*;
use serde_json::json;

fn class(mode: &str, params: serde_json::Value) -> StorageClass {
    serde_json::from_value(json!({"metadata": {"name": "local-disk"},
        "provisioner": PROVISIONER, "volumeBindingMode": mode, "parameters": params}))
    .unwrap()
}

fn pvc(ann: serde_json::Value, modes: &[&str]) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": "data", "namespace": "ns", "uid": "abc", "resourceVersion": "7",
            "annotations": ann},
        "spec": {"accessModes": modes, "storageClassName": "local-disk",
            "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap()
}

#[test]
fn which_claims_are_this_nodes() {
    let wffc = class("WaitForFirstConsumer", json!({}));
    let imm = class("Immediate", json!({}));
    let ours = json!({ANN_STORAGE_PROVISIONER: PROVISIONER});
    assert_eq!(
        decide(&pvc(ours.clone(), &[]), &imm, "n1"),
        Decision::Provision
    );
    assert_eq!(
        decide(&pvc(ours.clone(), &[]), &wffc, "n1"),
        Decision::Ignore
    );
    let selected = json!({ANN_BETA_STORAGE_PROVISIONER: PROVISIONER, ANN_SELECTED_NODE: "n1"});
    assert_eq!(
        decide(&pvc(selected.clone(), &[]), &wffc, "n1"),
        Decision::Provision
    );
    assert_eq!(decide(&pvc(selected, &[]), &wffc, "n2"), Decision::Ignore);
    let other = json!({ANN_STORAGE_PROVISIONER: "ebs.csi.aws.com"});
    assert_eq!(decide(&pvc(other, &[]), &imm, "n1"), Decision::Ignore);
    let mut bound = pvc(ours, &[]);
    bound.spec.as_mut().unwrap().volume_name = Some("pv".into());
    assert_eq!(decide(&bound, &imm, "n1"), Decision::Ignore);
}

#[test]
fn parameters_and_modes_are_checked() {
    assert_eq!(
        class_fs_type(&class("Immediate", json!({}))).unwrap(),
        "ext4"
    );
    assert_eq!(
        class_fs_type(&class(
            "Immediate",
            json!({"csi.storage.k8s.io/fstype": "ext3"})
        ))
        .unwrap(),
        "ext3"
    );
    let e = class_fs_type(&class("Immediate", json!({"iops": "300"}))).unwrap_err();
    assert!(
        e.to_string().starts_with("invalid parameter \"iops\""),
        "{e}"
    );
    assert!(class_fs_type(&class("Immediate", json!({"fsType": "xfs"}))).is_err());
    assert_eq!(
        claim_size(&pvc(json!({}), &["ReadWriteOnce"])).unwrap(),
        1 << 30
    );
    let e = claim_size(&pvc(json!({}), &["ReadWriteMany"])).unwrap_err();
    assert_eq!(e, ClaimError::AccessMode("ReadWriteMany".into()));
    let mut block = pvc(json!({}), &["ReadWriteOnce"]);
    block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
    assert!(matches!(claim_size(&block), Err(ClaimError::VolumeMode(_))));
}

#[test]
fn the_pv_built_from_a_claim() {
    let c = pvc(json!({}), &["ReadWriteOnce"]);
    let mut sc = class("WaitForFirstConsumer", json!({}));
    sc.reclaim_policy = Some("Retain".into());
    let dir = Path::new("/var/lib/kennel/volumes");
    let img = image_path(dir, &pv_name(&c));
    assert_eq!(img, Path::new("/var/lib/kennel/volumes/pvc-abc.img"));
    let pv = build_pv(&c, &sc, "n1", &img, "ext4");
    let v = serde_json::to_value(&pv).unwrap();
    assert_eq!(v["metadata"]["name"], "pvc-abc");
    assert_eq!(
        v["metadata"]["annotations"][ANN_PROVISIONED_BY],
        "kennel.dev/local-disk"
    );
    let s = &v["spec"];
    assert_eq!(s["capacity"]["storage"], "1Gi");
    assert_eq!(s["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(s["volumeMode"], "Filesystem");
    assert_eq!(s["storageClassName"], "local-disk");
    assert_eq!(s["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        s["claimRef"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
            "name": "data", "uid": "abc", "resourceVersion": "7"})
    );
    assert_eq!(
        s["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]})
    );
    assert_eq!(
        s["csi"],
        json!({"driver": "kennel.dev/local-disk", "volumeHandle": "/var/lib/kennel/volumes/pvc-abc.img", "fsType": "ext4"})
    );
    // Default reclaim policy is Delete.
    let pv2 = build_pv(&c, &class("Immediate", json!({})), "n1", &img, "ext4");
    assert_eq!(
        pv2.spec
            .as_ref()
            .unwrap()
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Delete")
    );
    // Ownership: this node and this directory only.
    assert_eq!(own_image(&pv, "n1", dir), Some(img.clone()));
    assert_eq!(own_image(&pv, "n2", dir), None);
    assert_eq!(own_image(&pv, "n1", Path::new("/elsewhere")), None);
    // The node agent resolves it to the same image.
    assert!(!should_delete(&pv));
    let mut released = pv2.clone();
    released.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
        phase: Some("Released".into()),
        ..Default::default()
    });
    assert!(should_delete(&released));
}
