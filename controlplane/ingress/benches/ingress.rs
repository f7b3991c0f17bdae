//! Requests/s and p50/p99 latency through the Ingress controller vs straight to the backend,
//! side by side in one run: the real API server, one loopback backend, Debian's `wrk` when
//! installed (else a small hyper client load loop). Prints figures; asserts nothing on speed.
//!
//! `cargo bench -p kennel-ingress --bench ingress` (env `INGRESS_BENCH_SECS`, default 5;
//! `INGRESS_BENCH_CONNS`, default 16).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kennel_apiserver::testing::TestApiServer;
use kennel_ingress::IngressConfig;

const HOST: &str = "bench.example.test";

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: default}
spec:
  rules:
  - host: bench.example.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: svc-bench, port: {number: 80}}}}]}
"#;

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// wrk's "12.34ms" / "900.00us" / "1.02s".
fn wrk_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    num.parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * mul))
}

fn run_wrk(url: &str, host: &str, secs: u64, conns: u64) -> Option<Figures> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .args(["-H", &format!("Host: {host}"), url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).and_then(wrk_duration))
    };
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(Figures {
        rps,
        p50: pct("50%")?,
        p99: pct("99%")?,
    })
}

async fn run_loop(addr: SocketAddr, host: &str, secs: u64, conns: u64) -> Figures {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, host) = (client.clone(), host.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let req = hyper::Request::get(format!("http://{addr}/"))
                    .header("host", &host)
                    .body(Empty::new())
                    .unwrap();
                let t = Instant::now();
                if let Ok(r) = client.request(req).await {
                    let _ = r.into_body().collect().await;
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)));
    Figures {
        rps: all.len() as f64 / secs as f64,
        p50: at(0.50).copied().unwrap_or_default(),
        p99: at(0.99).copied().unwrap_or_default(),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let secs = env_num("INGRESS_BENCH_SECS", 5);
        let conns = env_num("INGRESS_BENCH_CONNS", 16);
        let api = TestApiServer::start().await;
        let backend = common::backend("bench").await;
        common::service(&api.client, "svc-bench", &[backend.port()]).await;
        common::apply(&api.api.kubeconfig, INGRESS);
        let mut cfg = IngressConfig::new(vec![]);
        cfg.http_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.https_listen = None;
        let ing = kennel_ingress::spawn(cfg, api.client.clone()).expect("ingress");
        ing.ready().await;
        let addr = ing.http_addr.unwrap();
        common::routes_to(addr, HOST, "/", "bench").await;

        let wrk = Command::new("wrk").arg("--version").output().is_ok();
        let tool = if wrk { "wrk -t2" } else { "hyper client loop" };
        println!(
            "ingress bench: {tool}, {conns} connections, {secs} s per run, GET / (~150 B body)"
        );
        println!(
            "{:<28} {:>12} {:>10} {:>10}",
            "path", "requests/s", "p50", "p99"
        );
        for (name, target, host) in [
            ("direct to the backend", backend, "backend"),
            ("through kennel-ingress", addr, HOST),
        ] {
            let f = if wrk {
                let url = format!("http://{target}/");
                tokio::task::spawn_blocking({
                    let host = host.to_string();
                    move || run_wrk(&url, &host, secs, conns)
                })
                .await
                .unwrap()
            } else {
                None
            };
            let f = match f {
                Some(f) => f,
                None => run_loop(target, host, secs, conns).await,
            };
            println!(
                "{name:<28} {:>12.0} {:>10.2?} {:>10.2?}",
                f.rps, f.p50, f.p99
            );
        }
    });
}
