//! ServiceAccount tokens through the real HTTPS server: TokenRequest bound to a pod, the token as
//! a bearer credential, TokenReview, and the token dying with its pod and its ServiceAccount.

mod common;

use std::time::Duration;

use axum::http::{Method, Request, StatusCode};
use common::server::{Backend, TestServer};
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

async fn call(client: &Client, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let data = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(Body::from(data))
        .unwrap();
    let resp = client.send(req).await.expect("send");
    let status = resp.status();
    let bytes = resp.into_body().collect_bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

/// A client that presents only `token` (no client certificate).
async fn token_client(server: &TestServer, token: &str) -> Client {
    let mut kc = Kubeconfig::read_from(&server.api.kubeconfig).unwrap();
    for u in &mut kc.auth_infos {
        if let Some(info) = u.auth_info.as_mut() {
            info.client_certificate_data = None;
            info.client_key_data = None;
            info.client_certificate = None;
            info.client_key = None;
            info.token = Some(token.to_string().into());
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

/// Polls `path` with `client` until it answers `want` (RBAC and watches are asynchronous).
async fn eventually(client: &Client, path: &str, want: StatusCode) -> Value {
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..100 {
        last = call(client, Method::GET, path, Value::Null).await;
        if last.0 == want {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("GET {path}: want {want}, last {} {}", last.0, last.1);
}

const NS: &str = "/api/v1/namespaces/default";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_over_https() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.client().await;
    let (s, b) = call(
        &admin,
        Method::POST,
        &format!("{NS}/serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = call(
        &admin,
        Method::POST,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"serviceAccountName": "robot",
                        "containers": [{"name": "main", "image": "busybox"}]}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let pod_uid = b["metadata"]["uid"].as_str().unwrap().to_string();

    // TokenRequest: validation, then a pod-bound token.
    let token_path = format!("{NS}/serviceaccounts/robot/token");
    let (s, b) = call(
        &admin,
        Method::POST,
        &token_path,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 60}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = call(
        &admin,
        Method::POST,
        &format!("{NS}/serviceaccounts/ghost/token"),
        json!({"spec": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = call(
        &admin,
        Method::POST,
        &token_path,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": pod_uid}}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["status"]["expirationTimestamp"].is_string(), "{b}");
    let token = b["status"]["token"].as_str().unwrap().to_string();

    // The token is a credential: authenticated (403 until RBAC allows, then 200).
    let robot = token_client(&server, &token).await;
    let (s, b) = call(&robot, Method::GET, &format!("{NS}/pods"), Value::Null).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap_or("")
            .contains("system:serviceaccount:default:robot"),
        "{b}"
    );
    let (s, b) = call(
        &admin,
        Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "robot-view"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    eventually(&robot, &format!("{NS}/pods"), StatusCode::OK).await;

    // TokenReview.
    let (s, b) = call(
        &admin,
        Method::POST,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": token}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"]["authenticated"], true, "{b}");
    assert_eq!(
        b["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    assert_eq!(
        b["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    let (_, b) = call(
        &admin,
        Method::POST,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        json!({"spec": {"token": token, "audiences": ["vault"]}}),
    )
    .await;
    assert_eq!(b["status"]["authenticated"], false, "{b}");

    // A token for another audience, and a garbage token, are 401.
    let (_, b) = call(
        &admin,
        Method::POST,
        &token_path,
        json!({"spec": {"audiences": ["vault"]}}),
    )
    .await;
    let vault = token_client(&server, b["status"]["token"].as_str().unwrap()).await;
    eventually(&vault, &format!("{NS}/pods"), StatusCode::UNAUTHORIZED).await;
    let garbage = token_client(&server, "a.b.c").await;
    eventually(&garbage, &format!("{NS}/pods"), StatusCode::UNAUTHORIZED).await;

    // An unbound token outlives the pod; the pod-bound one does not.
    let (_, b) = call(&admin, Method::POST, &token_path, json!({"spec": {}})).await;
    let unbound = token_client(&server, b["status"]["token"].as_str().unwrap()).await;
    let (s, b) = call(
        &admin,
        Method::DELETE,
        &format!("{NS}/pods/web?gracePeriodSeconds=0"),
        Value::Null,
    )
    .await;
    assert!(s.is_success(), "{s} {b}");
    eventually(&robot, &format!("{NS}/pods"), StatusCode::UNAUTHORIZED).await;
    eventually(&unbound, &format!("{NS}/pods"), StatusCode::OK).await;

    // Deleting the ServiceAccount ends its tokens.
    let (s, b) = call(
        &admin,
        Method::DELETE,
        &format!("{NS}/serviceaccounts/robot"),
        Value::Null,
    )
    .await;
    assert!(s.is_success(), "{s} {b}");
    // Well within the token cache's TTL: the watch on ServiceAccounts emptied it.
    let started = std::time::Instant::now();
    loop {
        let (s, _) = call(&unbound, Method::GET, &format!("{NS}/pods"), Value::Null).await;
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(started.elapsed() < Duration::from_millis(500), "still {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
