//! The Ingress controller end to end: the real API server, backends on loopback that echo what
//! they got, Ingresses applied with the real kubectl, requests with the real curl.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::ByteString;
use kennel_apiserver::testing::TestApiServer;
use kennel_ingress::{IngressConfig, RunningIngress};
use kube::api::{Api, PostParams};

fn start(api: &TestApiServer) -> RunningIngress {
    let mut cfg = IngressConfig::new(vec![NODE_IP.parse().unwrap()]);
    cfg.http_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.https_listen = Some("127.0.0.1:0".parse().unwrap());
    kennel_ingress::spawn(cfg, api.client.clone()).expect("start the ingress controller")
}

const MAIN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: main, namespace: default}
spec:
  ingressClassName: kennel
  rules:
  - host: a.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
      - {path: /FOO, pathType: Prefix, backend: {service: {name: svc-b, port: {name: http}}}}
      - {path: /foo/bar, pathType: Exact, backend: {service: {name: svc-c, port: {number: 80}}}}
      - {path: /foo/bar/, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
      - {path: /empty, pathType: Prefix, backend: {service: {name: svc-empty, port: {number: 80}}}}
      - {path: /dead, pathType: ImplementationSpecific, backend: {service: {name: svc-dead, port: {number: 80}}}}
  - host: "*.wild.example.test"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-rr, port: {number: 80}}}}
"#;

const OTHER_CLASS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: other.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
"#;

const FALLBACK: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, namespace: default}
spec:
  defaultBackend: {service: {name: svc-def, port: {number: 80}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_by_host_and_path_over_http() {
    let api = TestApiServer::start().await;
    let c = &api.client;
    for (svc, names) in [
        ("svc-a", vec!["a"]),
        ("svc-b", vec!["b"]),
        ("svc-c", vec!["c"]),
        ("svc-def", vec!["def"]),
        ("svc-rr", vec!["rr1", "rr2"]),
    ] {
        let mut ports = Vec::new();
        for n in names {
            ports.push(backend(n).await.port());
        }
        service(c, svc, &ports).await;
    }
    service(c, "svc-empty", &[]).await;
    service(c, "svc-dead", &[dead_port()]).await;
    let kc = api.api.kubeconfig.clone();
    apply(&kc, &MAIN.replace("/FOO", "/foo"));
    apply(&kc, OTHER_CLASS);

    let ing = start(&api);
    ing.ready().await;
    let addr = ing.http_addr.unwrap();

    // Host and path routing, what the backend sees.
    let r = routes_to(addr, "a.example.test", "/x?q=1", "a").await;
    assert_eq!(r.code, "200");
    assert_eq!(r.field("path"), Some("/x?q=1"));
    assert_eq!(r.field("host"), Some("a.example.test"));
    assert_eq!(r.field("xff"), Some("127.0.0.1"));
    assert_eq!(r.field("xfh"), Some("a.example.test"));
    assert_eq!(r.field("xfp"), Some("http"));
    for (path, want) in [
        ("/", "a"),
        ("/foo", "b"),
        ("/foo/", "b"),
        ("/foo/baz", "b"),
        ("/foobar", "a"),
        ("/foo/bar", "c"),
        ("/foo/bar/", "a"),
        ("/foo/bar/x", "a"),
    ] {
        let r = get(addr, "A.Example.Test", path);
        assert_eq!(r.field("backend"), Some(want), "{path}: {r:?}");
    }
    let r = get(addr, "a.example.test", "/empty");
    assert_eq!(r.code, "503", "{r:?}");
    assert!(
        r.body.contains("no endpoints for default/svc-empty:80"),
        "{r:?}"
    );
    assert_eq!(get(addr, "a.example.test", "/dead").code, "502");
    let r = get(addr, "unknown.test", "/");
    assert_eq!(
        (r.code.as_str(), r.body.trim()),
        ("404", "default backend - 404")
    );
    assert_eq!(
        get(addr, "other.example.test", "/").code,
        "404",
        "class nginx is not ours"
    );
    assert_eq!(
        get(addr, "y.x.wild.example.test", "/").code,
        "404",
        "one label only"
    );

    // Hop-by-hop headers stop here; bodies stream through.
    let url = format!("http://{addr}/up");
    let r = curl(&[
        "-H",
        "Host: a.example.test",
        "-H",
        "Connection: X-Hop",
        "-H",
        "X-Hop: 1",
        &url,
    ]);
    assert_eq!(r.field("xhop"), Some("-"), "{r:?}");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 1 << 20]).unwrap();
    let r = curl(&[
        "-H",
        "Host: a.example.test",
        "--data-binary",
        &format!("@{}", big.display()),
        &url,
    ]);
    assert_eq!(
        (r.field("method"), r.field("len")),
        (Some("POST"), Some("1048576")),
        "{r:?}"
    );

    // HTTP/2 with prior knowledge (h2c) on the plain port.
    let url = format!("http://{addr}/h2c");
    let r = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: a.example.test",
        &url,
    ]);
    assert_eq!(
        (r.version.as_str(), r.field("backend")),
        ("2", Some("a")),
        "{r:?}"
    );

    // Round robin over the two endpoints of svc-rr (two slices).
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let r = get(addr, "x.wild.example.test", "/");
        *seen
            .entry(r.field("backend").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|n| *n >= 3), "spread: {seen:?}");

    // A defaultBackend (Ingress without class: ours, kennel is the default).
    apply(&kc, FALLBACK);
    routes_to(addr, "unknown.test", "/", "def").await;
    routes_to(addr, "y.x.wild.example.test", "/", "def").await;
    assert_eq!(get(addr, "a.example.test", "/").field("backend"), Some("a"));

    // An update of the Ingress takes effect.
    apply(&kc, &MAIN.replace("/FOO", "/foo2"));
    routes_to(addr, "a.example.test", "/foo2", "b").await;
    routes_to(addr, "a.example.test", "/foo", "a").await;

    // Status: kubectl shows the address of ours, none on the other class.
    eventually("ADDRESS of main", || {
        let out = kubectl(&kc, &["get", "ingress", "main", "fallback"], "");
        (out.lines().filter(|l| l.contains(NODE_IP)).count() == 2).then_some(())
    })
    .await;
    let other = Api::<Ingress>::namespaced(c.clone(), "default")
        .get("other")
        .await
        .unwrap();
    let lb = other
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress);
    assert!(
        lb.unwrap_or_default().is_empty(),
        "status of another class untouched"
    );
    let st = ing.status().borrow().clone();
    assert_eq!(st.ingresses, 2, "{st:?}");
    assert_eq!(st.status_errors, 0, "{st:?}");
}

fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingress test CA");
    let pem = params.self_signed(&key).unwrap().pem();
    (rcgen::Issuer::new(params, key), pem)
}

fn leaf(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (
        params.signed_by(&key, ca).unwrap().pem(),
        key.serialize_pem(),
    )
}

async fn tls_secret(c: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

const SECURE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure, namespace: default}
spec:
  tls:
  - {hosts: [secure.example.test], secretName: secure-tls}
  - {hosts: ["*.wild.example.test"], secretName: wild-tls}
  - {hosts: [broken.example.test], secretName: broken-tls}
  rules:
  - host: secure.example.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: svc-secure, port: {number: 80}}}}]}
  - host: "*.wild.example.test"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: svc-wild, port: {number: 80}}}}]}
  - host: broken.example.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: svc-secure, port: {number: 80}}}}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_certificates_by_sni() {
    let api = TestApiServer::start().await;
    let c = &api.client;
    service(c, "svc-secure", &[backend("secure").await.port()]).await;
    service(c, "svc-wild", &[backend("wild").await.port()]).await;
    let (issuer, ca_pem) = ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let (crt, key) = leaf(&issuer, &["secure.example.test"]);
    tls_secret(c, "secure-tls", &[("tls.crt", &crt), ("tls.key", &key)]).await;
    let (crt, key) = leaf(&issuer, &["*.wild.example.test"]);
    tls_secret(c, "wild-tls", &[("tls.crt", &crt), ("tls.key", &key)]).await;
    tls_secret(
        c,
        "broken-tls",
        &[
            ("tls.crt", "-----BEGIN CERTIFICATE-----\n!!\n"),
            ("tls.key", &key),
        ],
    )
    .await;
    apply(&api.api.kubeconfig, SECURE);

    let ing = start(&api);
    ing.ready().await;
    let port = ing.https_addr.unwrap().port();
    let https = |host: &str, extra: &[&str]| {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/path");
        let mut args = vec!["--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let ca_arg = ca_file.to_str().unwrap();

    // The Secret's certificate verifies against its CA, chosen by SNI (exact, then wildcard).
    let r = eventually("the secure certificate", || {
        let r = https("secure.example.test", &["--cacert", ca_arg]);
        (r.exit == 0).then_some(r)
    })
    .await;
    assert_eq!(r.field("backend"), Some("secure"), "{r:?}");
    assert_eq!(r.field("xfp"), Some("https"));
    assert_eq!(
        r.field("host"),
        Some(&*format!("secure.example.test:{port}"))
    );
    let r = https("a.wild.example.test", &["--cacert", ca_arg]);
    assert_eq!((r.exit, r.field("backend")), (0, Some("wild")), "{r:?}");

    // HTTP/2 by ALPN.
    let r = https("secure.example.test", &["--cacert", ca_arg, "--http2"]);
    assert_eq!(
        (r.version.as_str(), r.field("backend")),
        ("2", Some("secure")),
        "{r:?}"
    );
    assert_eq!(r.field("path"), Some("/path"));

    // Unknown SNI: the default certificate (not from the CA), then the 404 backend.
    let r = https("nobody.example.test", &["--cacert", ca_arg]);
    assert_eq!(r.exit, 60, "certificate must not verify: {r:?}");
    let r = https("nobody.example.test", &["-k", "-v"]);
    assert_eq!(r.code, "404", "{r:?}");
    assert!(
        r.stderr.contains("CN=Kennel Ingress Default Certificate"),
        "{}",
        r.stderr
    );

    // A broken Secret is skipped with a warning naming it; its host gets the default cert.
    let st = ing.status().borrow().clone();
    assert_eq!(st.certificates, 2, "{st:?}");
    assert!(
        st.warnings
            .iter()
            .any(|w| w.contains("secret default/broken-tls")),
        "{:?}",
        st.warnings
    );
    let r = https("broken.example.test", &["-k", "-v"]);
    assert_eq!(r.field("backend"), Some("secure"), "{r:?}");
    assert!(r.stderr.contains("CN=Kennel Ingress Default Certificate"));
}

const KEEP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: keep, namespace: default}
spec:
  ingressClassName: kennel
  rules:
  - host: keep.example.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: SVC, port: {number: 80}}}}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keepalive_survives_reconfiguration_and_upgrades_pass() {
    let api = TestApiServer::start().await;
    let c = &api.client;
    service(c, "svc-one", &[backend("one").await.port()]).await;
    service(c, "svc-two", &[backend("two").await.port()]).await;
    let kc = api.api.kubeconfig.clone();
    apply(&kc, &KEEP.replace("SVC", "svc-one"));
    let ing = start(&api);
    ing.ready().await;
    let addr: SocketAddr = ing.http_addr.unwrap();
    routes_to(addr, "keep.example.test", "/", "one").await;

    // One keep-alive connection, before and after a reconfiguration; and a request in flight
    // during it (the backend answers after 2 s) completes from the old backend.
    let mut conn = Raw::connect(addr);
    let (head, body) = conn.get("keep.example.test", "/first");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("backend=one"), "{body}");
    let slow =
        tokio::task::spawn_blocking(move || get(addr, "keep.example.test", "/slow?delay=2000"));
    eventually("the slow request at its backend", || {
        (SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let before = ing.status().borrow().generation;
    apply(&kc, &KEEP.replace("SVC", "svc-two"));
    routes_to(addr, "keep.example.test", "/", "two").await;
    assert!(ing.status().borrow().generation > before);
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.code.as_str(), slow.field("backend")),
        ("200", Some("one")),
        "{slow:?}"
    );
    let (head, body) = conn.get("keep.example.test", "/second");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        body.contains("backend=two") && body.contains("path=/second"),
        "{body}"
    );

    // An Upgrade passes bytes both ways.
    let mut up = Raw::connect(addr);
    write!(
        up.0,
        "GET /echo HTTP/1.1\r\nHost: keep.example.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let head = up.read_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    for msg in ["ping\n", "and more bytes after that\n"] {
        up.0.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        up.0.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), msg);
    }
}
