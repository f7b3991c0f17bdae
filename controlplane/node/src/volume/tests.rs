use super::*;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeSource, EmptyDirVolumeSource, ObjectFieldSelector,
    PodSpec, ProjectedVolumeSource, SecretProjection, SecretVolumeSource, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::ByteString;
use std::os::unix::fs::PermissionsExt;

fn pod() -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("envpod".into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("u1".into());
    p.metadata.labels = Some(BTreeMap::from([("app".into(), "kubia".into())]));
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "main".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "cfg".into(),
                    mount_path: "/etc/cfg".into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "cfg".into(),
                    mount_path: "/color".into(),
                    sub_path: Some("color".into()),
                    ..Default::default()
                },
                VolumeMount {
                    name: "scratch".into(),
                    mount_path: "/scratch".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }],
        volumes: Some(vec![
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "colors".into(),
                    items: Some(vec![KeyToPath {
                        key: "c".into(),
                        path: "color".into(),
                        mode: Some(0o400),
                    }]),
                    default_mode: Some(0o640),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "sec".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("creds".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "info".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![
                        DownwardAPIVolumeFile {
                            path: "name".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.name".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        DownwardAPIVolumeFile {
                            path: "labels".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.labels".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "proj".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "creds".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    default_mode: Some(0o600),
                }),
                ..Default::default()
            },
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    });
    p
}

fn objects() -> (BTreeMap<String, ConfigMap>, BTreeMap<String, Secret>) {
    let cm = ConfigMap {
        data: Some(BTreeMap::from([
            ("c".into(), "blue".into()),
            ("other".into(), "x".into()),
        ])),
        ..Default::default()
    };
    let s = Secret {
        data: Some(BTreeMap::from([(
            "password".into(),
            ByteString(b"hunter2".to_vec()),
        )])),
        ..Default::default()
    };
    (
        BTreeMap::from([("colors".into(), cm)]),
        BTreeMap::from([("creds".into(), s)]),
    )
}

fn ctx<'a>(
    pod: &'a Pod,
    cms: &'a BTreeMap<String, ConfigMap>,
    secrets: &'a BTreeMap<String, Secret>,
) -> EnvContext<'a> {
    EnvContext {
        pod,
        node_name: "n1",
        host_ips: &[],
        pod_ips: &[],
        allocatable_cpu: None,
        allocatable_memory: None,
        allocatable_ephemeral_storage: None,
        config_maps: cms,
        secrets,
        services: &[],
        master_service: None,
    }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn volumes_are_laid_out_as_kubelet_does() {
    let t = tempfile::tempdir().unwrap();
    let p = pod();
    let (cms, secrets) = objects();
    prepare(t.path(), &ctx(&p, &cms, &secrets)).unwrap();
    let cfg = volume_dir(t.path(), "u1", "configmap", "cfg");
    assert!(cfg.ends_with("u1/volumes/kubernetes.io~configmap/cfg"));
    assert_eq!(std::fs::read_to_string(cfg.join("color")).unwrap(), "blue");
    assert!(!cfg.join("other").exists(), "items select keys");
    assert_eq!(mode_of(&cfg.join("color")), 0o400, "item mode wins");
    let sec = volume_dir(t.path(), "u1", "secret", "sec");
    assert_eq!(
        std::fs::read_to_string(sec.join("password")).unwrap(),
        "hunter2"
    );
    assert_eq!(mode_of(&sec.join("password")), DEFAULT_MODE);
    let info = volume_dir(t.path(), "u1", "downward-api", "info");
    assert_eq!(
        std::fs::read_to_string(info.join("name")).unwrap(),
        "envpod"
    );
    assert_eq!(
        std::fs::read_to_string(info.join("labels")).unwrap(),
        "app=\"kubia\""
    );
    let proj = volume_dir(t.path(), "u1", "projected", "proj");
    assert_eq!(
        mode_of(&proj.join("password")),
        0o600,
        "projected defaultMode"
    );
    assert!(volume_dir(t.path(), "u1", "empty-dir", "scratch").is_dir());
}

#[test]
fn a_missing_object_names_itself_and_an_optional_one_is_empty() {
    let t = tempfile::tempdir().unwrap();
    let p = pod();
    let (cms, _) = objects();
    let none = BTreeMap::new();
    let err = prepare(t.path(), &ctx(&p, &cms, &none)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"sec\" : secret \"creds\" not found"
    );
    let mut p2 = pod();
    let vols = p2.spec.as_mut().unwrap().volumes.as_mut().unwrap();
    vols.retain(|v| v.name == "cfg");
    vols[0].config_map.as_mut().unwrap().optional = Some(true);
    prepare(t.path(), &ctx(&p2, &BTreeMap::new(), &none)).unwrap();
    assert_eq!(
        referenced(&p2).config_maps,
        BTreeMap::from([("colors".to_string(), true)])
    );
}

#[test]
fn mounts_resolve_sub_paths_and_read_only_plugins() {
    let root = Path::new("/data/pods");
    let p = pod();
    let c = &p.spec.as_ref().unwrap().containers[0];
    let m = mounts(root, &p, c).unwrap();
    let got: Vec<(&str, &str, bool)> = m
        .iter()
        .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
        .collect();
    assert_eq!(
        got,
        [
            (
                "/etc/cfg",
                "/data/pods/u1/volumes/kubernetes.io~configmap/cfg",
                true
            ),
            (
                "/color",
                "/data/pods/u1/volumes/kubernetes.io~configmap/cfg/color",
                true
            ),
            (
                "/scratch",
                "/data/pods/u1/volumes/kubernetes.io~empty-dir/scratch",
                false
            ),
        ]
    );
    let mut bad = c.clone();
    bad.volume_mounts.as_mut().unwrap()[0].name = "nope".into();
    assert!(mounts(root, &p, &bad)
        .unwrap_err()
        .to_string()
        .contains("nope"));
}

/// The volume ServiceAccount admission adds (its JSON form, as upstream writes it).
fn api_access_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u9"},
        "spec": {
            "serviceAccountName": "default",
            "containers": [{"name": "c", "volumeMounts": [{"name": "kube-api-access-abcde",
                "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}],
        },
    }))
    .unwrap()
}

#[test]
fn service_account_volume_gets_token_ca_and_namespace() {
    let t = tempfile::tempdir().unwrap();
    let p = api_access_pod();
    let cm = ConfigMap {
        data: Some(BTreeMap::from([(
            "ca.crt".into(),
            "-----BEGIN CERTIFICATE-----\n".into(),
        )])),
        ..Default::default()
    };
    let cms = BTreeMap::from([("kube-root-ca.crt".to_string(), cm)]);
    let secrets = BTreeMap::new();
    let c = ctx(&p, &cms, &secrets);
    let key = ("kube-api-access-abcde".to_string(), "token".to_string());
    let tokens = token::PodTokens::from([(key.clone(), "jwt-1".to_string())]);
    prepare_with_tokens(t.path(), &c, &tokens).unwrap();
    let dir = volume_dir(t.path(), "u9", "projected", "kube-api-access-abcde");
    assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "jwt-1");
    assert_eq!(
        std::fs::read_to_string(dir.join("namespace")).unwrap(),
        "shop"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        "-----BEGIN CERTIFICATE-----\n"
    );
    assert_eq!(mode_of(&dir.join("token")), 0o644);
    let first = std::fs::read_link(dir.join("..data")).unwrap();
    // Same token: nothing rewritten. A refreshed token swaps `..data`.
    prepare_with_tokens(t.path(), &c, &tokens).unwrap();
    assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), first);
    let refreshed = token::PodTokens::from([(key, "jwt-2".to_string())]);
    std::thread::sleep(std::time::Duration::from_millis(2));
    prepare_with_tokens(t.path(), &c, &refreshed).unwrap();
    assert_ne!(std::fs::read_link(dir.join("..data")).unwrap(), first);
    assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "jwt-2");
    let m = mounts(t.path(), &p, &p.spec.as_ref().unwrap().containers[0]).unwrap();
    assert_eq!(
        m[0].container_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert!(m[0].readonly);

    // Without the fetched token the volume is not written; without the CA ConfigMap it fails
    // as kubelet's FailedMount.
    let e = prepare_with_tokens(t.path(), &c, &token::PodTokens::new()).unwrap_err();
    assert!(matches!(e, VolumeError::TokenMissing { .. }), "{e}");
    let none = BTreeMap::new();
    let c = ctx(&p, &none, &secrets);
    let e = prepare_with_tokens(t.path(), &c, &tokens).unwrap_err();
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"kube-api-access-abcde\" : configmap \"kube-root-ca.crt\" not found"
    );
    let e = VolumeError::Token {
        volume: "kube-api-access-abcde".into(),
        source: token::TokenError::Fetch("serviceaccounts \"default\" not found".into()),
    };
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"kube-api-access-abcde\" : failed to fetch token: serviceaccounts \"default\" not found"
    );
}
