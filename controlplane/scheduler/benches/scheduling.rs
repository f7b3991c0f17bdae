//! Scheduling throughput and latency: pods/s and p50/p99 creation→binding through the real API
//! server (TLS, SQLite) with simulated nodes, and the framework's own decision rate (no API) as
//! the ceiling. `KENNEL_BENCH_PODS` (default 300) and `KENNEL_BENCH_NODES` (comma-separated,
//! default `100,1000`) size the runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kennel_apiserver::ApiServerConfig;
use kennel_scheduler::cache::Cache;
use kennel_scheduler::framework::Rotor;
use kennel_scheduler::nodeinfo::PodInfo;
use kennel_scheduler::plugins::standalone_profile;
use kennel_scheduler::sim::{self, SimConfig};
use kennel_scheduler::SchedulerConfig;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .unwrap()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Decisions per second of the framework alone (assume after each decision, no API).
fn framework_rate(nodes: usize, pods: usize) -> f64 {
    let cfg = SimConfig {
        nodes,
        ..Default::default()
    };
    let mut cache = Cache::new();
    for i in 0..nodes {
        let mut n = sim::node_object(&cfg, i);
        n.status = Some(
            serde_json::from_value(
                json!({"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}}),
            )
            .unwrap(),
        );
        cache.apply_node(n);
    }
    let profile = standalone_profile("default-scheduler", None);
    let mut rotor = Rotor::default();
    let t = Instant::now();
    for i in 0..pods {
        let info = Arc::new(PodInfo::new(Arc::new(pod(&format!("f{i}")))));
        let d = profile
            .schedule(&info, cache.snapshot(), &mut rotor)
            .expect("fits");
        cache.assume(info, &d.node);
    }
    pods as f64 / t.elapsed().as_secs_f64()
}

async fn api_run(nodes: usize, pods: usize) {
    let dir = tempfile::tempdir().unwrap();
    let api = kennel_apiserver::start(ApiServerConfig::new(dir.path()))
        .await
        .unwrap();
    let client = || kennel_apiserver::testing::admin_client(&api);
    let (c_sim, c_sched, c_test) = (client().await, client().await, client().await);
    let t = Instant::now();
    let sim_task = tokio::spawn(sim::run(
        SimConfig {
            nodes,
            pod_ready_delay: Duration::from_secs(1),
            ..Default::default()
        },
        c_sim,
    ));
    let node_api: Api<Node> = Api::all(c_test.clone());
    while node_api
        .list(&Default::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        < nodes
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  {nodes} sim nodes registered in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let sched = tokio::spawn(kennel_scheduler::run(
        SchedulerConfig {
            identity: "bench".into(),
            leader_elect: false,
            max_in_flight_bindings: 64,
            ..Default::default()
        },
        c_sched,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Watch bindings.
    let watch_api: Api<Pod> = Api::namespaced(c_test.clone(), "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch = tokio::spawn(async move {
        let s = watcher(watch_api, watcher::Config::default());
        futures::pin_mut!(s);
        while let Some(Ok(ev)) = s.next().await {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    let _ = tx.send((p.metadata.name.unwrap_or_default(), Instant::now()));
                }
            }
        }
    });
    let pods_api: Api<Pod> = Api::namespaced(c_test.clone(), "default");
    let created: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let creator = {
        let created = created.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..pods)
                .for_each_concurrent(32, |i| {
                    let (api, created) = (pods_api.clone(), created.clone());
                    async move {
                        let name = format!("b{i}");
                        let t = Instant::now();
                        api.create(&PostParams::default(), &pod(&name))
                            .await
                            .expect("create");
                        created.lock().unwrap().insert(name, t);
                    }
                })
                .await;
        })
    };
    let mut bound: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while bound.len() < pods && Instant::now() < deadline {
        if let Ok(Some((n, t))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            bound.entry(n).or_insert(t);
        }
    }
    creator.await.unwrap();
    let end = bound.values().max().copied().unwrap_or(start);
    let created = created.lock().unwrap().clone();
    let mut lat: Vec<Duration> = bound
        .iter()
        .filter_map(|(n, t)| Some(t.saturating_duration_since(*created.get(n)?)))
        .collect();
    lat.sort();
    println!(
        "  {nodes} nodes, {pods} pods: {} bound, {:.0} pods/s, creation→binding p50 {:.1} ms, p99 {:.1} ms",
        bound.len(),
        bound.len() as f64 / end.duration_since(start).as_secs_f64(),
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
    );
    watch.abort();
    sched.abort();
    sim_task.abort();
    drop(api);
}

fn main() {
    let pods: usize = env("KENNEL_BENCH_PODS", "300")
        .parse()
        .expect("KENNEL_BENCH_PODS");
    let node_counts: Vec<usize> = env("KENNEL_BENCH_NODES", "100,1000")
        .split(',')
        .map(|s| s.trim().parse().expect("KENNEL_BENCH_NODES"))
        .collect();
    println!("framework only (no API), decisions/s:");
    for &n in &node_counts {
        let fp = pods.max(2000).min(n * 100);
        println!(
            "  {n} nodes, {fp} pods: {:.0} decisions/s",
            framework_rate(n, fp)
        );
    }
    println!("through the API server (TLS, SQLite) with simulated nodes:");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for &n in &node_counts {
        rt.block_on(api_run(n, pods));
    }
}
