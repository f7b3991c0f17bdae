//! The chain against a real SQLite store: TokenRequest → authenticate → TokenReview.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::auth::user::{AUTHENTICATED, MASTERS};
use kennel_store::SqliteStore;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

struct Env {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    authn: Authenticator,
}

fn authenticator(dir: &std::path::Path, store: Arc<dyn Store>) -> Authenticator {
    Authenticator::new(AuthnConfig {
        store,
        pki_dir: dir.join("pki"),
        static_tokens: "admintoken,admin,admin-uid,\"system:masters\"\n".into(),
        issuer: ISSUER.into(),
    })
    .unwrap()
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let authn = authenticator(dir.path(), store.clone());
    Env { dir, store, authn }
}

async fn put(store: &dyn Store, plural: &str, ns: Option<&str>, obj: Value) {
    let def = crate::registry::find("", "v1", plural).unwrap();
    let key = def.key(ns, obj["metadata"]["name"].as_str().unwrap());
    let _ = store.delete(&key, None).await;
    store
        .create(&key, crate::handlers::encode(&obj))
        .await
        .unwrap();
}

async fn del(store: &dyn Store, plural: &str, ns: Option<&str>, name: &str) {
    let def = crate::registry::find("", "v1", plural).unwrap();
    store.delete(&def.key(ns, name), None).await.unwrap();
}

async fn sa(store: &dyn Store, name: &str, uid: &str) {
    put(
        store,
        "serviceaccounts",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": "default", "uid": uid}}),
    )
    .await;
}

async fn pod(store: &dyn Store, name: &str, uid: &str, sa: &str, extra_meta: Value) {
    let mut meta = json!({"name": name, "namespace": "default", "uid": uid});
    if let Value::Object(m) = extra_meta {
        for (k, v) in m {
            meta[k] = v;
        }
    }
    put(
        store,
        "pods",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": {"serviceAccountName": sa, "nodeName": "n1",
                        "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
}

/// Waits (at most 2 s: the invalidating watch is asynchronous) for `t` to be refused.
async fn refused(a: &Authenticator, t: &str) -> AuthnError {
    for _ in 0..200 {
        if let Err(e) = a.authenticate(bearer(t)).await {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("token still accepted");
}

fn bearer(t: &str) -> Credentials<'_> {
    Credentials {
        bearer: Some(t),
        client_cert: None,
    }
}

async fn request(e: &Env, name: &str, spec: Value) -> Result<Value, ApiError> {
    token_request(&e.authn, "default", name, &json!({"spec": spec})).await
}

async fn token(e: &Env, name: &str, spec: Value) -> String {
    let v = request(e, name, spec).await.unwrap();
    v["status"]["token"].as_str().unwrap().to_string()
}

async fn review(e: &Env, token: &str, auds: &[&str]) -> Value {
    token_review(
        &e.authn,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": auds}}),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn static_tokens_and_certificates() {
    let e = env();
    assert_eq!(
        e.authn.authenticate(Credentials::default()).await.unwrap(),
        None
    );
    assert_eq!(e.authn.authenticate(bearer("  ")).await.unwrap(), None);
    let u = e
        .authn
        .authenticate(bearer("admintoken"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.name, "admin");
    assert_eq!(u.uid, "admin-uid");
    assert_eq!(u.groups, vec![MASTERS, AUTHENTICATED]);
    assert!(matches!(
        e.authn.authenticate(bearer("nope")).await,
        Err(AuthnError::Invalid(_))
    ));
    // The certificate wins over the token; a bad certificate falls back to the token.
    let der = super::x509::tests::cert(Some("jane"), &["dev"]);
    let c = Credentials {
        bearer: Some("admintoken"),
        client_cert: Some(&der),
    };
    assert_eq!(e.authn.authenticate(c).await.unwrap().unwrap().name, "jane");
    let no_cn = super::x509::tests::cert(None, &["dev"]);
    let c = Credentials {
        bearer: Some("admintoken"),
        client_cert: Some(&no_cn),
    };
    assert_eq!(
        e.authn.authenticate(c).await.unwrap().unwrap().name,
        "admin"
    );
    let c = Credentials {
        bearer: None,
        client_cert: Some(&no_cn),
    };
    assert!(e.authn.authenticate(c).await.is_err());
    // Static tokens are valid for the API audiences only.
    let r = review(&e, "admintoken", &[]).await;
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["user"]["username"], "admin");
    let r = review(&e, "admintoken", &["vault"]).await;
    assert_eq!(r["status"]["authenticated"], false);
    assert!(r["status"]["error"].is_null());
    // A malformed token file is refused at start, naming the line.
    let err = Authenticator::new(AuthnConfig {
        store: e.store.clone(),
        pki_dir: e.dir.path().join("pki"),
        static_tokens: "a,b\nbroken\n".into(),
        issuer: ISSUER.into(),
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[tokio::test]
async fn token_request_authenticate_review() {
    let e = env();
    let s = e.store.as_ref();
    sa(s, "builder", "sa-uid").await;
    put(
        s,
        "nodes",
        None,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "node-uid"}}),
    )
    .await;
    pod(s, "web", "pod-uid", "builder", json!({})).await;
    let v = request(
        &e,
        "builder",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "pod-uid"}}),
    )
    .await
    .unwrap();
    assert_eq!(v["kind"], "TokenRequest");
    assert_eq!(v["spec"]["expirationSeconds"], 3600);
    assert_eq!(v["spec"]["audiences"], json!([ISSUER]));
    let exp = v["status"]["expirationTimestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(exp).is_ok(), "{exp}");
    assert!(exp.ends_with('Z'));
    let t = v["status"]["token"].as_str().unwrap();

    let u = e.authn.authenticate(bearer(t)).await.unwrap().unwrap();
    assert_eq!(u.name, "system:serviceaccount:default:builder");
    assert_eq!(u.uid, "sa-uid");
    assert_eq!(
        u.groups,
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            AUTHENTICATED
        ]
    );
    assert_eq!(u.extra[EXTRA_POD_NAME], vec!["web"]);
    assert_eq!(u.extra[EXTRA_POD_UID], vec!["pod-uid"]);
    assert_eq!(u.extra[EXTRA_NODE_NAME], vec!["n1"]);
    assert_eq!(u.extra[EXTRA_NODE_UID], vec!["node-uid"]);
    assert!(u.extra[EXTRA_CREDENTIAL_ID][0].starts_with("JTI="));
    assert_eq!(u.service_account(), Some(("default", "builder")));

    let r = review(&e, t, &[]).await;
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(r["status"]["user"]["username"], u.name);
    assert_eq!(r["status"]["user"]["extra"][EXTRA_POD_NAME], json!(["web"]));
    assert_eq!(r["status"]["audiences"], json!([ISSUER]));
    let r = review(&e, t, &["vault"]).await;
    assert_eq!(r["status"]["authenticated"], false);
    assert!(r["status"]["error"].as_str().unwrap().contains("audience"));

    // A token for another audience is not an API credential but reviews for it.
    let vt = token(&e, "builder", json!({"audiences": ["vault"]})).await;
    let err = e.authn.authenticate(bearer(&vt)).await.unwrap_err();
    assert!(err.to_string().contains("audience"), "{err}");
    let r = review(&e, &vt, &["vault", "other"]).await;
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["audiences"], json!(["vault"]));

    // Tampered token.
    let mut bad = t.to_string();
    bad.insert(bad.len() - 3, 'x');
    assert!(e.authn.authenticate(bearer(&bad)).await.is_err());
    let r = review(&e, &bad, &[]).await;
    assert_eq!(r["status"]["authenticated"], false);
    assert!(r["status"]["error"].is_string());

    // "Restart": a new authenticator on the same directory accepts the old token.
    let again = authenticator(e.dir.path(), e.store.clone());
    assert_eq!(again.signing_key().kid(), e.authn.signing_key().kid());
    assert!(again.authenticate(bearer(t)).await.unwrap().is_some());

    // The token is cached once the invalidating watch runs.
    let mut cached = false;
    for _ in 0..200 {
        assert!(e.authn.authenticate(bearer(t)).await.is_ok());
        if e.authn.cache.get(t).is_some() {
            cached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(cached, "the token cache never went live");
    // The bound pod deleted: refused at once (the watch empties the cache).
    del(s, "pods", Some("default"), "web").await;
    let err = refused(&e.authn, t).await;
    assert!(err.to_string().contains("deleted"), "{err}");
    assert_eq!(review(&e, t, &[]).await["status"]["authenticated"], false);
    // Recreated with another uid: still refused.
    pod(s, "web", "pod-uid-2", "builder", json!({})).await;
    refused(&e.authn, t).await;
    // A pod whose grace period is over.
    pod(
        s,
        "web",
        "pod-uid",
        "builder",
        json!({"deletionTimestamp": "2020-01-01T00:00:00Z"}),
    )
    .await;
    refused(&e.authn, t).await;
    pod(s, "web", "pod-uid", "builder", json!({})).await;
    assert!(e.authn.authenticate(bearer(t)).await.is_ok());

    // The ServiceAccount deleted, or recreated with another uid: refused.
    let unbound = token(&e, "builder", json!({})).await;
    assert!(e.authn.authenticate(bearer(&unbound)).await.is_ok());
    del(s, "serviceaccounts", Some("default"), "builder").await;
    let err = refused(&e.authn, &unbound).await;
    assert!(err.to_string().contains("deleted"), "{err}");
    sa(s, "builder", "sa-uid-2").await;
    refused(&e.authn, &unbound).await;
    refused(&e.authn, t).await;
}

#[tokio::test]
async fn token_request_errors_and_expiry() {
    let e = env();
    let s = e.store.as_ref();
    let code = |r: Result<Value, ApiError>| r.unwrap_err().code().as_u16();
    assert_eq!(code(request(&e, "ghost", json!({})).await), 404);
    sa(s, "builder", "sa-uid").await;
    sa(s, "other", "other-uid").await;
    pod(s, "web", "pod-uid", "other", json!({})).await;
    let r = request(&e, "builder", json!({"expirationSeconds": 599})).await;
    match r {
        Err(ApiError::Invalid { causes, kind, .. }) => {
            assert_eq!(kind, "TokenRequest");
            assert_eq!(causes[0].field, "spec.expirationSeconds");
            assert!(causes[0].message.contains("10 minutes"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(request(&e, "builder", json!({"expirationSeconds": "x"})).await),
        422
    );
    assert_eq!(
        code(request(&e, "builder", json!({"boundObjectRef": {"kind": "Pod"}})).await),
        422
    );
    let pod_ref = |name: &str, uid: &str| json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}});
    assert_eq!(code(request(&e, "builder", pod_ref("nope", "")).await), 404);
    // The pod runs as another ServiceAccount.
    assert_eq!(code(request(&e, "builder", pod_ref("web", "")).await), 400);
    assert_eq!(
        code(request(&e, "other", pod_ref("web", "wrong")).await),
        409
    );
    assert!(request(&e, "other", pod_ref("web", "pod-uid"))
        .await
        .is_ok());
    // A pod's token of admission's 3607 s is valid for a year; the response says 3607 s.
    let mut spec = pod_ref("web", "pod-uid");
    spec["expirationSeconds"] = json!(3607);
    let v = request(&e, "other", spec).await.unwrap();
    let payload = v["status"]["token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, super::request::EXTENDED_EXPIRATION_SECS);
    let until =
        chrono::DateTime::parse_from_rfc3339(v["status"]["expirationTimestamp"].as_str().unwrap())
            .unwrap()
            .timestamp();
    assert!(
        (until - claims["iat"].as_i64().unwrap() - 3607).abs() <= 1,
        "{v}"
    );
    assert_eq!(
        code(
            request(
                &e,
                "builder",
                json!({"boundObjectRef": {"kind": "ConfigMap", "name": "x"}})
            )
            .await
        ),
        400
    );
    // Secret-bound.
    put(
        s,
        "secrets",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "namespace": "default", "uid": "s-uid"}}),
    )
    .await;
    let st = token(
        &e,
        "builder",
        json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1"}}),
    )
    .await;
    assert!(e.authn.authenticate(bearer(&st)).await.is_ok());
    del(s, "secrets", Some("default"), "s1").await;
    refused(&e.authn, &st).await;
    // Long requests are capped.
    let v = request(&e, "builder", json!({"expirationSeconds": 10 * 24 * 3600}))
        .await
        .unwrap();
    assert_eq!(v["spec"]["expirationSeconds"], MAX_EXPIRATION_SECS);
    // An expired token.
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        aud: vec![ISSUER.into()],
        exp: now - 3600,
        iat: now - 7200,
        iss: ISSUER.into(),
        jti: "j".into(),
        nbf: now - 7200,
        sub: "system:serviceaccount:default:builder".into(),
        kubernetes: KubeClaims {
            namespace: "default".into(),
            serviceaccount: Ref {
                name: "builder".into(),
                uid: "sa-uid".into(),
            },
            pod: None,
            secret: None,
            node: None,
        },
    };
    let old = e.authn.issue(&claims).unwrap();
    let err = e.authn.authenticate(bearer(&old)).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // The same claims, not expired, are accepted; another issuer is not.
    let fresh = Claims {
        exp: now + 600,
        ..claims.clone()
    };
    assert!(e
        .authn
        .authenticate(bearer(&e.authn.issue(&fresh).unwrap()))
        .await
        .is_ok());
    let foreign = Claims {
        exp: now + 600,
        iss: "https://elsewhere".into(),
        ..claims
    };
    assert!(e
        .authn
        .authenticate(bearer(&e.authn.issue(&foreign).unwrap()))
        .await
        .is_err());
    // TokenReview without a token.
    assert_eq!(
        token_review(&e.authn, &json!({"spec": {}}))
            .await
            .unwrap_err()
            .code()
            .as_u16(),
        400
    );
}

#[tokio::test]
async fn bootstrap_tokens_in_the_chain() {
    let e = env();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    super::bootstrap::tests::put_secret(
        e.store.as_ref(),
        "abcdef",
        &[
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("expiration", &future),
        ],
        super::bootstrap::SECRET_TYPE,
    )
    .await;
    let u = e
        .authn
        .authenticate(bearer("abcdef.0123456789abcdef"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.name, "system:bootstrap:abcdef");
    assert!(u.in_group("system:bootstrappers"));
    assert!(e
        .authn
        .authenticate(bearer("abcdef.0123456789abcdee"))
        .await
        .is_err());
    let r = review(&e, "abcdef.0123456789abcdef", &[]).await;
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["user"]["username"], "system:bootstrap:abcdef");
}
