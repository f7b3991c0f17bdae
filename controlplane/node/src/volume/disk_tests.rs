use super::*;
use serde_json::json;

fn pv(spec: serde_json::Value) -> PersistentVolume {
    serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": spec})).unwrap()
}

fn labels() -> BTreeMap<String, String> {
    [("kubernetes.io/hostname".to_string(), "n1".to_string())].into()
}

fn claim(phase: &str, volume: &str) -> PersistentVolumeClaim {
    serde_json::from_value(
        json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
        "spec": {"volumeName": volume}, "status": {"phase": phase}}),
    )
    .unwrap()
}

#[test]
fn claims_must_exist_and_be_bound() {
    assert_eq!(
        claim_volume("ns", "data", None).unwrap_err().to_string(),
        "persistentvolumeclaim \"data\" not found"
    );
    assert_eq!(
        claim_volume("ns", "data", Some(&claim("Pending", "")))
            .unwrap_err()
            .to_string(),
        "PVC ns/data has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
    );
    assert_eq!(
        claim_volume("ns", "data", Some(&claim("Bound", "pv1"))).unwrap(),
        "pv1"
    );
}

#[test]
fn directory_sources_get_an_image_inside() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().display().to_string();
    let p = plan(
        &pv(json!({"capacity": {"storage": "16Mi"}, "local": {"path": path}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap();
    assert_eq!(p.image, d.path().join(DIR_IMAGE));
    assert_eq!(p.create_size, Some(16 << 20));
    assert_eq!(p.fs_type, "ext4");
    // hostPath DirectoryOrCreate makes the directory.
    let sub = d.path().join("made");
    let p = plan(
        &pv(json!({"capacity": {"storage": "16Mi"},
            "hostPath": {"path": sub.display().to_string(), "type": "DirectoryOrCreate"}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap();
    assert_eq!(p.create_dir.as_deref(), Some(sub.as_path()));
    realize("pv1", &p).unwrap();
    assert!(sub.join(DIR_IMAGE).is_file());
    // No capacity: refused.
    let e = plan(&pv(json!({"local": {"path": path}})), "u1", "n1", &labels()).unwrap_err();
    assert!(matches!(e, DiskError::NoCapacity(_)), "{e}");
}

#[test]
fn file_sources_are_used_as_they_are() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    std::fs::write(&img, b"x").unwrap();
    let p = plan(
        &pv(json!({"local": {"path": img.display().to_string(), "fsType": "ext3"}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap();
    assert_eq!(p.image, img);
    assert_eq!(p.fs_type, "ext3");
    assert_eq!(p.create_size, None);
    let p = plan(
        &pv(
            json!({"csi": {"driver": CSI_DRIVER, "volumeHandle": img.display().to_string(),
            "readOnly": true}}),
        ),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap();
    assert!(p.read_only);
    assert_eq!(p.fs_type, "ext4");
}

#[test]
fn refusals_name_the_problem() {
    let e = plan(
        &pv(json!({"nfs": {"server": "s", "path": "/x"}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nfs volumes are not supported"), "{e}");
    let e = plan(
        &pv(json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "v"}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("csi driver \"ebs.csi.aws.com\""), "{e}");
    let pinned = pv(
        json!({"local": {"path": "/"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}),
    );
    let e = plan(&pinned, "u1", "n1", &labels())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "volume node affinity conflict: persistentvolume \"pv1\" is not accessible from node \"n1\""
    );
    let other = pv(json!({"local": {"path": "/"}, "claimRef": {"uid": "u2"}}));
    assert!(matches!(
        plan(&other, "u1", "n1", &labels()),
        Err(DiskError::ClaimRefMismatch { .. })
    ));
    let e = plan(
        &pv(json!({"local": {"path": "/does/not/exist"}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn layout_and_mounts_follow_the_contract() {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "pod-uid"},
        "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/logs", "subPath": "logs"},
            {"name": "ro", "mountPath": "/ro"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c1"}},
                    {"name": "ro", "persistentVolumeClaim": {"claimName": "c2", "readOnly": true}}]}}))
    .unwrap();
    let vols = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
    let p = plan(
        &pv(json!({"capacity": {"storage": "8Mi"}, "local": {"path": store.path().display().to_string()}})),
        "u1",
        "n1",
        &labels(),
    )
    .unwrap();
    for v in &vols {
        let dir = crate::volume::prepare_disk(root.path(), "pod-uid", v, "pv1", &p).unwrap();
        assert_eq!(
            dir,
            root.path()
                .join("pod-uid/volumes/kubernetes.io~kennel-disk")
                .join(&v.name)
        );
        let desc = read_descriptor(&dir).unwrap();
        assert_eq!(
            desc.image,
            store.path().join(DIR_IMAGE).display().to_string()
        );
        assert_eq!(desc.fs_type, "ext4");
        assert_eq!(desc.read_only, v.name == "ro");
        // The JSON keys are the contract's.
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(DESCRIPTOR)).unwrap()).unwrap();
        assert_eq!(raw["readOnly"], json!(v.name == "ro"));
        assert!(raw["fsType"].is_string() && raw["image"].is_string());
    }
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let m = crate::volume::mounts(root.path(), &pod, c).unwrap();
    let base = root
        .path()
        .join("pod-uid/volumes/kubernetes.io~kennel-disk");
    assert_eq!(m[0].host_path, base.join("data").display().to_string());
    assert!(!m[0].readonly);
    assert_eq!(m[1].host_path, base.join("data/logs").display().to_string());
    assert!(
        !base.join("data/logs").exists(),
        "subPath is inside the disk"
    );
    assert_eq!(m[2].host_path, base.join("ro").display().to_string());
    assert!(m[2].readonly);
    // Preparing again changes nothing.
    let before = std::fs::read(store.path().join(DIR_IMAGE)).unwrap();
    crate::volume::prepare_disk(root.path(), "pod-uid", &vols[0], "pv1", &p).unwrap();
    assert_eq!(std::fs::read(store.path().join(DIR_IMAGE)).unwrap(), before);
}
