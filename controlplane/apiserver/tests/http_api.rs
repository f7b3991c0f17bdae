//! HTTP-level semantics through a real TLS connection: body limits, malformed bodies, field
//! validation, Status errors, Table output, watch bookmarks, auth, discovery, subresources,
//! generation, finalizers and graceful pod deletion.

mod common;

use std::time::Duration;

use axum::http::{Method, Request, StatusCode};
use common::server::{Backend, TestServer};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

struct Http {
    client: Client,
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Http {
    async fn call(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        accept: &str,
        body: Vec<u8>,
    ) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", ctype)
            .header("Accept", accept)
            .body(Body::from(body))
            .unwrap();
        let resp = self.client.send(req).await.expect("send");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect_bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Resp {
        let data = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.call(method, path, "application/json", "application/json", data)
            .await
    }
}

async fn client_for(server: &TestServer, token: Option<&str>) -> Client {
    let mut kc = Kubeconfig::read_from(&server.api.kubeconfig).unwrap();
    if let Some(t) = token {
        for u in &mut kc.auth_infos {
            if let Some(info) = u.auth_info.as_mut() {
                // Only the token (or nothing) authenticates: drop the admin's client certificate.
                info.client_certificate_data = None;
                info.client_key_data = None;
                info.token = if t.is_empty() {
                    None
                } else {
                    Some(t.to_string().into())
                };
            }
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}})
}

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn scenario(backend: Backend) {
    let server = TestServer::start(backend).await;
    let h = Http {
        client: client_for(&server, None).await,
    };

    // health, version, discovery
    assert_eq!(
        h.json(Method::GET, "/healthz", Value::Null).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.json(Method::GET, "/version", Value::Null).await.body["major"],
        "1"
    );
    let v1 = h.json(Method::GET, "/api/v1", Value::Null).await.body;
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "pods",
        "pods/status",
        "pods/binding",
        "services",
        "nodes/status",
        "namespaces",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let agg = h
        .call(
            Method::GET,
            "/apis",
            "application/json",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            vec![],
        )
        .await;
    assert!(agg.headers["content-type"]
        .to_str()
        .unwrap()
        .contains("APIGroupDiscoveryList"));
    assert_eq!(agg.body["kind"], "APIGroupDiscoveryList");
    let scale = h.json(Method::GET, "/apis/apps/v1", Value::Null).await.body;
    assert!(scale["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "deployments/scale" && r["kind"] == "Scale"));
    let oa = h.json(Method::GET, "/openapi/v3", Value::Null).await.body;
    assert!(oa["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());

    // anonymous and wrong tokens are refused
    let anon = Http {
        client: client_for(&server, Some("")).await,
    };
    let r = anon.json(Method::GET, PODS, Value::Null).await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Unauthorized"))
    );
    let wrong = Http {
        client: client_for(&server, Some("not-the-token")).await,
    };
    assert_eq!(
        wrong.json(Method::GET, PODS, Value::Null).await.status,
        StatusCode::UNAUTHORIZED
    );

    // 413 over 3 MiB, 400 for malformed JSON and YAML naming the problem, YAML accepted
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(4 << 20)}});
    let r = h
        .json(Method::POST, "/api/v1/namespaces/default/configmaps", big)
        .await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("RequestEntityTooLarge"))
    );
    let r = h
        .call(
            Method::POST,
            PODS,
            "application/json",
            "application/json",
            b"{\"kind\": ".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("error decoding JSON body"),
        "{}",
        r.body
    );
    let r = h
        .call(
            Method::POST,
            PODS,
            "application/yaml",
            "application/json",
            b"metadata: [unclosed".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"].as_str().unwrap().contains("YAML"),
        "{}",
        r.body
    );
    let yaml =
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n".to_vec();
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            "application/yaml",
            "application/json",
            yaml,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // a wrong type is a 400 naming the field
    let r = h.json(Method::POST, "/apis/apps/v1/namespaces/default/deployments", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "three"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.replicas"),
        "{}",
        r.body
    );

    // fieldValidation: Warn drops unknown fields with a Warning header, Strict refuses
    let mut p = pod("warned");
    p["spec"]["bogus"] = json!(1);
    let r = h
        .json(
            Method::POST,
            &format!("{PODS}?fieldValidation=Warn"),
            p.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        r.headers["warning"]
            .to_str()
            .unwrap()
            .contains("unknown field \\\"spec.bogus\\\""),
        "{:?}",
        r.headers
    );
    assert!(r.body["spec"].get("bogus").is_none());
    p["metadata"]["name"] = json!("strict");
    let r = h
        .json(Method::POST, &format!("{PODS}?fieldValidation=Strict"), p)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // 422 with causes, 404 and 409 as Status objects
    let r = h.json(Method::POST, PODS, pod("Not_Valid")).await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.name");
    let r = h
        .json(Method::GET, &format!("{PODS}/missing"), Value::Null)
        .await;
    assert_eq!(
        (
            r.status,
            r.body["details"]["kind"].as_str(),
            r.body["details"]["name"].as_str()
        ),
        (StatusCode::NOT_FOUND, Some("pods"), Some("missing"))
    );
    let r = h
        .json(Method::POST, "/api/v1/namespaces/nowhere/pods", pod("p"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // generation: spec changes bump it, metadata changes do not
    let created = h.json(Method::POST, PODS, pod("web")).await.body;
    assert_eq!(created["metadata"]["generation"], 1);
    let r = h
        .call(
            Method::PATCH,
            &format!("{PODS}/web"),
            "application/merge-patch+json",
            "application/json",
            br#"{"metadata":{"labels":{"a":"b"}}}"#.to_vec(),
        )
        .await;
    assert_eq!(r.body["metadata"]["generation"], 1);
    let r = h
        .call(
            Method::PATCH,
            &format!("{PODS}/web"),
            "application/strategic-merge-patch+json",
            "application/json",
            br#"{"spec":{"containers":[{"name":"main","image":"busybox:2"}]}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (
            r.body["metadata"]["generation"].as_i64(),
            r.body["spec"]["containers"][0]["image"].as_str()
        ),
        (Some(2), Some("busybox:2"))
    );

    // a no-op patch keeps the resourceVersion
    let before = r.body["metadata"]["resourceVersion"].clone();
    let r = h
        .call(
            Method::PATCH,
            &format!("{PODS}/web"),
            "application/merge-patch+json",
            "application/json",
            br#"{"metadata":{"labels":{"a":"b"}}}"#.to_vec(),
        )
        .await;
    assert_eq!(r.body["metadata"]["resourceVersion"], before);

    // status subresource: status writes ignore spec; main writes ignore status
    let mut obj = r.body.clone();
    obj["status"]["phase"] = json!("Running");
    obj["spec"]["containers"][0]["image"] = json!("ignored");
    let r = h
        .json(Method::PUT, &format!("{PODS}/web/status"), obj)
        .await;
    assert_eq!(
        (
            r.body["status"]["phase"].as_str(),
            r.body["spec"]["containers"][0]["image"].as_str()
        ),
        (Some("Running"), Some("busybox:2"))
    );
    let mut obj = r.body.clone();
    obj["status"]["phase"] = json!("Failed");
    let r = h.json(Method::PUT, &format!("{PODS}/web"), obj).await;
    assert_eq!(r.body["status"]["phase"], "Running");

    // binding: once only
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "node-1"}});
    assert_eq!(
        h.json(
            Method::POST,
            &format!("{PODS}/web/binding"),
            binding.clone()
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.json(Method::POST, &format!("{PODS}/web/binding"), binding)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let r = h
        .json(
            Method::GET,
            &format!("{PODS}?fieldSelector=spec.nodeName%3Dnode-1"),
            Value::Null,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);

    // graceful deletion of a scheduled pod, then immediate with gracePeriodSeconds=0
    let r = h
        .json(Method::DELETE, &format!("{PODS}/web"), Value::Null)
        .await;
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        h.json(Method::GET, &format!("{PODS}/web"), Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    h.json(
        Method::DELETE,
        &format!("{PODS}/web?gracePeriodSeconds=0"),
        Value::Null,
    )
    .await;
    assert_eq!(
        h.json(Method::GET, &format!("{PODS}/web"), Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // finalizers hold deletion until removed
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    h.json(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        cm.clone(),
    )
    .await;
    h.json(
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/held",
        Value::Null,
    )
    .await;
    let r = h
        .json(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/held",
            Value::Null,
        )
        .await;
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    cm = r.body;
    cm["metadata"]["finalizers"] = json!([]);
    h.json(
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/held",
        cm,
    )
    .await;
    assert_eq!(
        h.json(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/held",
            Value::Null
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    // events.k8s.io/v1 Events share storage with core/v1 Events
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "ev1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "kennel/test", "reportingInstance": "t1",
        "action": "Testing", "reason": "Tested", "type": "Normal", "note": "hello",
        "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}});
    let r = h
        .json(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
            ev,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = h
        .json(
            Method::GET,
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb",
            Value::Null,
        )
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", r.body);
    assert_eq!(
        (
            items[0]["message"].as_str(),
            items[0]["reportingComponent"].as_str()
        ),
        (Some("hello"), Some("kennel/test"))
    );
    let r = h
        .json(
            Method::GET,
            "/apis/events.k8s.io/v1/namespaces/default/events/ev1",
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.body["note"].as_str(), r.body["apiVersion"].as_str()),
        (Some("hello"), Some("events.k8s.io/v1"))
    );

    // owner references: the API server only records the deletion's propagation (upstream's
    // BeforeDelete); the controller manager's garbage collector removes or orphans dependents
    // (proven in controlplane/controllers/tests/gc.rs). Here, with no controller manager:
    // Background deletes the owner at once and leaves the dependents; Foreground and Orphan keep
    // the owner, terminating, with the `foregroundDeletion` / `orphan` finalizer.
    let deploy = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}})
    };
    let owned = |kind: &str, api: &str, owner: &Value, name: &str| {
        let mut o = if kind == "Pod" {
            pod(name)
        } else {
            deploy(name)
        };
        o["kind"] = json!(kind);
        o["apiVersion"] = json!(api);
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true,
            "blockOwnerDeletion": true}]);
        o
    };
    const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
    const RSS: &str = "/apis/apps/v1/namespaces/default/replicasets";
    let finalizers_of = |v: &Value| -> Vec<String> {
        v["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    let d = h.json(Method::POST, DEPLOYS, deploy("owner")).await.body;
    let rs = h
        .json(
            Method::POST,
            RSS,
            owned("ReplicaSet", "apps/v1", &d, "owner-rs"),
        )
        .await
        .body;
    assert_eq!(rs["kind"], "ReplicaSet", "{rs}");
    let p = h
        .json(Method::POST, PODS, owned("Pod", "v1", &rs, "owner-rs-pod"))
        .await
        .body;
    assert_eq!(p["kind"], "Pod", "{p}");
    // Foreground: the ReplicaSet stays, terminating, until its blocking dependents are gone.
    let r = h
        .json(
            Method::DELETE,
            &format!("{RSS}/owner-rs"),
            json!({"propagationPolicy": "Foreground"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = h
        .json(Method::GET, &format!("{RSS}/owner-rs"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        r.body
    );
    assert_eq!(finalizers_of(&r.body), vec!["foregroundDeletion"]);
    // Background: the Deployment goes now; its ReplicaSet waits for the garbage collector.
    h.json(
        Method::DELETE,
        &format!("{DEPLOYS}/owner"),
        json!({"propagationPolicy": "Background"}),
    )
    .await;
    assert_eq!(
        h.json(Method::GET, &format!("{DEPLOYS}/owner"), Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .json(Method::GET, &format!("{PODS}/owner-rs-pod"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["metadata"]["ownerReferences"][0]["uid"],
        rs["metadata"]["uid"]
    );
    // Removing the finalizer (the collector's last step) lets the ReplicaSet go.
    let r = h
        .call(
            Method::PATCH,
            &format!("{RSS}/owner-rs"),
            "application/merge-patch+json",
            "application/json",
            br#"{"metadata":{"finalizers":null}}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        h.json(Method::GET, &format!("{RSS}/owner-rs"), Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Orphan: the owner stays with the `orphan` finalizer.
    let d = h.json(Method::POST, DEPLOYS, deploy("keeper")).await.body;
    h.json(
        Method::POST,
        RSS,
        owned("ReplicaSet", "apps/v1", &d, "keeper-rs"),
    )
    .await;
    h.json(
        Method::DELETE,
        &format!("{DEPLOYS}/keeper?propagationPolicy=Orphan"),
        Value::Null,
    )
    .await;
    let r = h
        .json(Method::GET, &format!("{DEPLOYS}/keeper"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        r.body
    );
    assert_eq!(finalizers_of(&r.body), vec!["orphan"]);
    let r = h
        .json(Method::GET, &format!("{RSS}/keeper-rs"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A policy that is not one is refused.
    let r = h
        .json(
            Method::DELETE,
            &format!("{RSS}/keeper-rs?propagationPolicy=Sideways"),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // Table output
    let r = h
        .call(
            Method::GET,
            PODS,
            "application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            vec![],
        )
        .await;
    assert_eq!(r.body["kind"], "Table");
    let cols: Vec<&str> = r.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&cols[..5], &["Name", "Ready", "Status", "Restarts", "Age"]);

    // dryRun=All writes nothing
    let r = h
        .json(Method::POST, &format!("{PODS}?dryRun=All"), pod("dry"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        h.json(Method::GET, &format!("{PODS}/dry"), Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // watch with sendInitialEvents + bookmarks: ADDED for existing, then the end-of-initial bookmark
    let req = Request::builder()
        .uri(format!("{PODS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=30"))
        .body(Body::empty())
        .unwrap();
    let resp = h.client.send(req).await.unwrap();
    let mut body = resp.into_body();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !buf.contains("initial-events-end") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("bookmark in time");
        let frame = frame.expect("frame").expect("frame ok");
        if let Ok(data) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let lines: Vec<Value> = buf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines.last().unwrap()["type"], "BOOKMARK");

    // A label-selected watch sees objects enter and leave the selection as ADDED/DELETED.
    let rv = h.json(Method::GET, PODS, Value::Null).await.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let req = Request::builder()
        .uri(format!(
            "{PODS}?watch=1&labelSelector=sel%3Dyes&resourceVersion={rv}"
        ))
        .body(Body::empty())
        .unwrap();
    let mut body = h.client.send(req).await.unwrap().into_body();
    let mut p = pod("selected");
    p["metadata"]["labels"] = json!({"sel": "yes"});
    h.json(Method::POST, PODS, p).await;
    h.json(Method::POST, PODS, pod("unselected")).await;
    let patch = |v: &str| format!(r#"{{"metadata":{{"labels":{{"sel":"{v}"}}}}}}"#).into_bytes();
    let path = format!("{PODS}/selected");
    let merge = "application/merge-patch+json";
    h.call(Method::PATCH, &path, merge, "application/json", patch("no"))
        .await;
    h.call(
        Method::PATCH,
        &path,
        merge,
        "application/json",
        patch("yes"),
    )
    .await;
    let annotate = br#"{"metadata":{"annotations":{"a":"b"}}}"#.to_vec();
    h.call(Method::PATCH, &path, merge, "application/json", annotate)
        .await;
    h.json(Method::DELETE, &path, Value::Null).await;
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while buf.lines().count() < 5 {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events in time");
        if let Ok(data) = frame.expect("frame").expect("frame ok").into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let events: Vec<(String, String)> = buf
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            let name = e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            (e["type"].as_str().unwrap().to_string(), name)
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["ADDED", "DELETED", "ADDED", "MODIFIED", "DELETED"]
    );
    assert!(events.iter().all(|(_, n)| n == "selected"));

    // Patch bodies of the wrong shape are refused with 400 (a scalar apply used to panic the
    // connection), and the server keeps serving.
    for (ctype, body, want) in [
        (
            "application/apply-patch+yaml",
            "hello\n",
            "must be an object, not a string",
        ),
        (
            "application/apply-patch+yaml",
            "- a\n- b\n",
            "must be an object, not a list",
        ),
        (
            "application/merge-patch+json",
            "[1]",
            "must be an object, not a list",
        ),
        (
            "application/strategic-merge-patch+json",
            "7",
            "must be an object, not a number",
        ),
        (
            "application/json-patch+json",
            "{}",
            "must be a list of operations, not an object",
        ),
    ] {
        let r = h
            .call(
                Method::PATCH,
                &format!("{PODS}/shape?fieldManager=test"),
                ctype,
                "application/json",
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{ctype} {body:?}: {:?}",
            r.body
        );
        assert!(
            r.body["message"].as_str().unwrap_or("").contains(want),
            "{:?}",
            r.body
        );
    }
    assert_eq!(
        h.json(Method::GET, "/healthz", Value::Null).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_semantics_sqlite() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_semantics_etcd() {
    scenario(Backend::Etcd).await;
}
