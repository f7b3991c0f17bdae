//! API server benchmark, SQLite and etcd side by side in one run (prints figures, asserts nothing):
//! pod creates/s with p50/p99 latency for 1 and 64 concurrent clients, watch delivery latency to
//! 1,000 watchers, and list latency at 10,000 pods. Clients are kube-rs over TLS with a token.
//!
//! Run: `cargo bench -p kennel-apiserver --bench apiserver` (needs `/usr/bin/etcd`).

#[path = "../../store/tests/common/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kennel_apiserver::{ApiServerConfig, StoreConfig};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

const WATCHERS: usize = 1000;
const WATCH_EVENTS: usize = 20;
const LIST_PODS: usize = 10_000;

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "main", "image": "luksa/kubia:v1",
            "ports": [{"containerPort": 8080}], "env": [{"name": "INTERVAL", "value": "30"}]}]}
    }))
    .expect("pod")
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Default)]
struct Results {
    rows: Vec<(String, String)>,
}

impl Results {
    fn add(&mut self, k: &str, v: String) {
        println!("  {k:<38} {v}");
        self.rows.push((k.to_string(), v));
    }
}

async fn ns(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

async fn creates(
    client: &Client,
    namespace: &str,
    clients: usize,
    per_client: usize,
) -> (f64, Duration, Duration) {
    ns(client, namespace).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let p = pod(&format!("p-{c}-{i}"));
                let t = Instant::now();
                api.create(&PostParams::default(), &p)
                    .await
                    .expect("create");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (rate, pct(&mut all, 0.5), pct(&mut all, 0.99))
}

async fn watch_latency(client: &Client) -> (Duration, Duration, usize) {
    ns(client, "watchbench").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "watchbench");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut handles = Vec::new();
    for _ in 0..WATCHERS {
        let stream = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .expect("watch");
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0;
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(p) = ev {
                    let _ = tx.send((p.metadata.name.unwrap_or_default(), Instant::now()));
                    seen += 1;
                    if seen == WATCH_EVENTS {
                        break;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut sent = std::collections::HashMap::new();
    for i in 0..WATCH_EVENTS {
        let name = format!("w-{i}");
        sent.insert(name.clone(), Instant::now());
        api.create(&PostParams::default(), &pod(&name))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while lat.len() < WATCHERS * WATCH_EVENTS {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => lat.push(at - sent[&name]),
            _ => break,
        }
    }
    for h in handles {
        h.abort();
    }
    let n = lat.len();
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99), n)
}

async fn list_latency(client: &Client) -> (Duration, Duration, Duration) {
    ns(client, "listbench").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "listbench");
    let mut tasks = Vec::new();
    for c in 0..32 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..LIST_PODS / 32 + 1 {
                let n = c * (LIST_PODS / 32 + 1) + i;
                if n < LIST_PODS {
                    api.create(&PostParams::default(), &pod(&format!("l-{n:05}")))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut full = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let l = api.list(&ListParams::default()).await.unwrap();
        full.push(t.elapsed());
        assert_eq!(l.items.len(), LIST_PODS);
    }
    let mut paged = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        api.list(&ListParams::default().limit(500)).await.unwrap();
        paged.push(t.elapsed());
    }
    let p50 = pct(&mut full, 0.5);
    let p99 = pct(&mut full, 0.99);
    (p50, p99, pct(&mut paged, 0.5))
}

async fn run(name: &str, store: StoreConfig) -> Results {
    println!("== {name}");
    let dir = tempfile::tempdir().unwrap();
    let server = kennel_apiserver::start(ApiServerConfig {
        store,
        ..ApiServerConfig::new(dir.path())
    })
    .await
    .expect("start");
    let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(cfg).unwrap();
    let mut r = Results::default();
    let (rate, p50, p99) = creates(&client, "c1", 1, 500).await;
    r.add(
        "creates, 1 client",
        format!("{rate:.0}/s  p50 {}  p99 {}", ms(p50), ms(p99)),
    );
    let (rate, p50, p99) = creates(&client, "c64", 64, 40).await;
    r.add(
        "creates, 64 clients",
        format!("{rate:.0}/s  p50 {}  p99 {}", ms(p50), ms(p99)),
    );
    let (p50, p99, n) = watch_latency(&client).await;
    r.add(
        &format!("watch delivery, {WATCHERS} watchers"),
        format!("p50 {}  p99 {}  ({n} deliveries)", ms(p50), ms(p99)),
    );
    let (p50, p99, paged) = list_latency(&client).await;
    r.add(
        &format!("list {LIST_PODS} pods (full)"),
        format!("p50 {}  p99 {}", ms(p50), ms(p99)),
    );
    r.add("list first page of 500", format!("p50 {}", ms(paged)));
    drop(server);
    r
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sqlite = run("SQLite (WAL, synchronous=FULL)", StoreConfig::Sqlite).await;
        let etcd_server = etcd::EtcdServer::start().await;
        let etcd = run(
            "etcd 3.4 (Debian, --unsafe-no-fsync)",
            StoreConfig::Etcd {
                endpoints: vec![etcd_server.endpoint.clone()],
            },
        )
        .await;
        println!();
        println!("{:<38} | {:<44} | etcd", "", "SQLite");
        for ((k, a), (_, b)) in sqlite.rows.iter().zip(etcd.rows.iter()) {
            println!("{k:<38} | {a:<44} | {b}");
        }
    });
}
