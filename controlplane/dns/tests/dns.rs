//! kennel-dns against the real API server, asked by Debian's real `dig` (bind9-dnsutils): the
//! specification's records for a ClusterIP, a headless and an ExternalName Service, pod names,
//! the version TXT, NXDOMAIN, TCP, an update, and forwarding to an upstream (a second kennel-dns
//! serving another domain) or SERVFAIL when it is gone.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kennel_apiserver::testing::TestApiServer;
use kennel_dns::DnsConfig;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs (Debian bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` lines, sorted.
fn short(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = dig(server, &a).lines().map(str::to_string).collect();
    v.sort();
    v
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create<K>(api: &Api<K>, v: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specification_through_dig() {
    let cluster = TestApiServer::start().await;
    let svcs: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    create(
        &svcs,
        json!({"metadata": {"name": "kubia"}, "spec": {"clusterIP": "10.96.7.7",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    create(
        &svcs,
        json!({"metadata": {"name": "kubia-pet"}, "spec": {"clusterIP": "None",
        "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    create(
        &svcs,
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName",
        "externalName": "api.example.com"}}),
    )
    .await;
    create(&slices, json!({"metadata": {"name": "kubia-pet-abc", "labels": {"kubernetes.io/service-name": "kubia-pet"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.88.0.5"], "hostname": "kubia-pet-0", "conditions": {"ready": true}},
            {"addresses": ["10.88.0.6"], "hostname": "kubia-pet-1", "conditions": {"ready": true}},
            {"addresses": ["10.88.0.7"], "conditions": {"ready": false}}]})).await;

    // The upstream: another kennel-dns, for the domain `upstream.test`.
    let upstream_api = TestApiServer::start().await;
    let up_svcs: Api<Service> = Api::namespaced(upstream_api.client.clone(), "default");
    create(
        &up_svcs,
        json!({"metadata": {"name": "far"}, "spec": {"clusterIP": "10.99.0.1",
        "ports": [{"port": 80}]}}),
    )
    .await;
    let mut up_cfg = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    up_cfg.domain = "upstream.test".into();
    let upstream = kennel_dns::serve(up_cfg, upstream_api.client.clone())
        .await
        .unwrap();
    upstream.ready().await;

    let mut cfg = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.upstreams = upstream.addrs.clone();
    let dns = kennel_dns::serve(cfg, cluster.client.clone())
        .await
        .unwrap();
    dns.ready().await;
    let s = dns.addrs[0];

    assert_eq!(
        short(s, &["kubia.default.svc.cluster.local"]),
        vec!["10.96.7.7"]
    );
    assert_eq!(
        short(s, &["KUBIA.Default.svc.cluster.local", "+tcp"]),
        vec!["10.96.7.7"],
        "TCP, any case"
    );
    assert_eq!(
        short(s, &["SRV", "_http._tcp.kubia.default.svc.cluster.local"]),
        vec!["0 100 80 kubia.default.svc.cluster.local."]
    );
    assert_eq!(
        short(s, &["-x", "10.96.7.7"]),
        vec!["kubia.default.svc.cluster.local."]
    );
    assert_eq!(
        short(s, &["kubia-pet.default.svc.cluster.local"]),
        vec!["10.88.0.5", "10.88.0.6"],
        "headless: the ready endpoints"
    );
    assert_eq!(
        short(s, &["kubia-pet-1.kubia-pet.default.svc.cluster.local"]),
        vec!["10.88.0.6"]
    );
    assert_eq!(
        short(
            s,
            &["SRV", "_http._tcp.kubia-pet.default.svc.cluster.local"]
        ),
        vec![
            "0 100 8080 kubia-pet-0.kubia-pet.default.svc.cluster.local.",
            "0 100 8080 kubia-pet-1.kubia-pet.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        short(s, &["-x", "10.88.0.5"]),
        vec!["kubia-pet-0.kubia-pet.default.svc.cluster.local."]
    );
    assert_eq!(
        short(s, &["ext.default.svc.cluster.local", "CNAME"]),
        vec!["api.example.com."]
    );
    assert_eq!(
        short(s, &["10-88-0-9.default.pod.cluster.local"]),
        vec!["10.88.0.9"]
    );
    assert_eq!(
        short(s, &["TXT", "dns-version.cluster.local"]),
        vec!["\"1.1.0\""]
    );
    let nx = dig(s, &["nope.default.svc.cluster.local"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA"),
        "{nx}"
    );
    let nodata = dig(s, &["TXT", "kubia.default.svc.cluster.local"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(
        dig(s, &["kubia.default.svc.cluster.local"]).contains("flags: qr aa"),
        "authoritative"
    );

    // Outside the domain: forwarded to the upstream.
    assert_eq!(
        short(s, &["far.default.svc.upstream.test"]),
        vec!["10.99.0.1"]
    );
    assert_eq!(
        short(s, &["far.default.svc.upstream.test", "+tcp"]),
        vec!["10.99.0.1"]
    );

    // An update reaches the answers.
    svcs.delete("kubia", &DeleteParams::default())
        .await
        .unwrap();
    until("kubia gone", || {
        dig(s, &["kubia.default.svc.cluster.local"]).contains("NXDOMAIN")
    })
    .await;

    // The upstream gone: SERVFAIL, promptly.
    drop(upstream);
    let t = Instant::now();
    let out = dig(s, &["far.default.svc.upstream.test"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "SERVFAIL within the 2 s budget"
    );
}
