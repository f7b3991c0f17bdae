//! Pods talking to the API, the node's side, against the real API server in-process:
//! ServiceAccount admission gives a new pod its `kube-api-access-*` volume, the node agent's
//! token manager asks `serviceaccounts/<sa>/token` for a token bound to the pod, and the volume
//! is laid out as kubelet does (token, `ca.crt`, `namespace`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kennel_apiserver::{ApiServerConfig, RunningApiServer};
use kennel_node::env::EnvContext;
use kennel_node::volume::token::{token_sources, TokenManager};
use kennel_node::volume::{self, VolumeError};
use kube::api::{Api, PostParams};
use serde_json::json;

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The API server with its default admission chain (ServiceAccount admission on, whatever the
/// shared test fixture chooses), and an admin client.
async fn api_server() -> (RunningApiServer, tempfile::TempDir, kube::Client) {
    let dir = tempfile::tempdir().unwrap();
    let api = kennel_apiserver::start(ApiServerConfig::new(dir.path()))
        .await
        .expect("start the API server");
    let client = kennel_apiserver::testing::admin_client(&api).await;
    (api, dir, client)
}

async fn create_sa(client: &kube::Client, ns: &str, name: &str) {
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

async fn create_pod(client: &kube::Client, ns: &str, name: &str, sa: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

/// The projected volume admission added, by name.
fn api_access_volume(pod: &Pod) -> String {
    let spec = pod.spec.as_ref().unwrap();
    let mount = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == MOUNT)
        .expect("the token mount");
    assert_eq!(mount.read_only, Some(true));
    assert!(mount.name.starts_with("kube-api-access-"), "{}", mount.name);
    mount.name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_adds_the_volume_and_the_node_requests_a_bound_token() {
    let (_api, _dir, client) = api_server().await;
    create_sa(&client, "default", "builder").await;
    let pod = create_pod(&client, "default", "web", "builder").await;
    let volume = api_access_volume(&pod);
    let sources = token_sources(&pod);
    assert_eq!(sources.len(), 1);
    let (v, path, key) = &sources[0];
    assert_eq!((v.as_str(), path.as_str()), (volume.as_str(), "token"));
    assert_eq!(key.service_account, "builder");
    assert_eq!(key.expiration_seconds, 3607);
    assert_eq!(key.pod_uid, pod.metadata.uid.clone().unwrap());
    assert!(
        key.audiences.is_empty(),
        "the API server's default audience"
    );

    // A pod whose ServiceAccount is gone: the FailedMount message carries the API's answer
    // (today also what an unwired TokenRequest endpoint answers), and nothing is cached.
    let mut orphan = pod.clone();
    orphan.spec.as_mut().unwrap().service_account_name = Some("deleted".into());
    let tokens = TokenManager::new();
    let e = tokens.pod_tokens(&client, &orphan).await.unwrap_err();
    assert!(matches!(e, VolumeError::Token { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "MountVolume.SetUp failed for volume \"{volume}\" : failed to fetch token: "
        )),
        "{msg}"
    );
    assert!(tokens.is_empty());
}

/// Upstream's ServiceAccount admission through the real create path: a missing ServiceAccount
/// is refused with upstream's message; a `default` ServiceAccount the controller creates a
/// moment after the namespace is waited for; `automountServiceAccountToken: false` (pod or
/// ServiceAccount) leaves no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_admission_as_upstream() {
    let (_api, _dir, client) = api_server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bare = |name: &str, extra: serde_json::Value| -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    match pods
        .create(
            &PostParams::default(),
            &bare("lost", json!({"serviceAccountName": "nobody"})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(
                s.message,
                "pods \"lost\" is forbidden: error looking up service account default/nobody: serviceaccount \"nobody\" not found"
            );
        }
        other => panic!("a pod of a missing ServiceAccount is refused: {other:?}"),
    }

    // The `default` ServiceAccount appears shortly after the pod is sent (as the controller
    // creates it in a new namespace): admission waits for it.
    let later = {
        let client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            create_sa(&client, "default", "default").await;
        })
    };
    let p = pods
        .create(&PostParams::default(), &bare("early", json!({})))
        .await
        .expect("admitted once the default ServiceAccount exists");
    later.await.unwrap();
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.service_account.as_deref(), Some("default"));
    api_access_volume(&p);

    let p = pods
        .create(
            &PostParams::default(),
            &bare("quiet", json!({"automountServiceAccountToken": false})),
        )
        .await
        .unwrap();
    let spec = p.spec.as_ref().unwrap();
    assert!(spec.volumes.as_ref().is_none_or(|v| v.is_empty()));
    assert!(spec.containers[0]
        .volume_mounts
        .as_ref()
        .is_none_or(|v| v.is_empty()));

    let sa: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "robot"}, "automountServiceAccountToken": false}),
    )
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let p = pods
        .create(
            &PostParams::default(),
            &bare("robot", json!({"serviceAccountName": "robot"})),
        )
        .await
        .unwrap();
    assert!(token_sources(&p).is_empty(), "the ServiceAccount opts out");
    let p = pods
        .create(
            &PostParams::default(),
            &bare(
                "robot-in",
                json!({"serviceAccountName": "robot", "automountServiceAccountToken": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(token_sources(&p).len(), 1, "the pod's choice wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn the_token_volume_is_laid_out_and_the_token_authenticates() {
    let (api, _dir, client) = api_server().await;
    create_sa(&client, "default", "default").await;
    let pod = create_pod(&client, "default", "reader", "default").await;
    let volume = api_access_volume(&pod);
    // What the root-CA publisher keeps in every namespace.
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
        "data": {"ca.crt": api.ca_pem},
    }))
    .unwrap();
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let tokens = TokenManager::new();
    assert!(tokens.refresh_due(&pod, chrono::Utc::now()));
    let got = tokens.pod_tokens(&client, &pod).await.unwrap();
    let token = got[&(volume.clone(), "token".to_string())].clone();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(!tokens.refresh_due(&pod, chrono::Utc::now()));
    // The next pass is served from the cache.
    let again = tokens.pod_tokens(&client, &pod).await.unwrap();
    assert_eq!(again[&(volume.clone(), "token".to_string())], token);
    assert_eq!(tokens.len(), 1);

    let root = tempfile::tempdir().unwrap();
    let cms = BTreeMap::from([("kube-root-ca.crt".to_string(), cm)]);
    let secrets = BTreeMap::new();
    let ctx = EnvContext {
        pod: &pod,
        node_name: "n1",
        host_ips: &[],
        pod_ips: &[],
        allocatable_cpu: None,
        allocatable_memory: None,
        allocatable_ephemeral_storage: None,
        config_maps: &cms,
        secrets: &secrets,
        services: &[],
        master_service: None,
    };
    volume::prepare_with_tokens(root.path(), &ctx, &got).unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let dir = volume::volume_dir(root.path(), &uid, "projected", &volume);
    assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), token);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        api.ca_pem
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("namespace")).unwrap(),
        "default"
    );

    // The token is the pod's identity: authenticated (not 401), authorized or not by RBAC.
    let status = list_pods_with(&api.url, &api.ca_pem, &token).await;
    assert_ne!(status, 401, "the pod's token authenticates");

    tokens.forget_pod(&uid);
    assert!(tokens.is_empty());
}

/// `GET /api/v1/namespaces/default/pods` with `token` through a kube client; the HTTP status.
async fn list_pods_with(url: &str, ca_pem: &str, token: &str) -> u16 {
    let kc: kube::config::Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": url,
            "certificate-authority-data": base64_of(ca_pem)}}],
        "users": [{"name": "pod", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "pod"}}],
        "current-context": "c",
    }))
    .unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    match Api::<Pod>::namespaced(client, "default")
        .list(&Default::default())
        .await
    {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("listing pods with the pod's token: {e}"),
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
