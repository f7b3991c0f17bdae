//! Benchmark (prints figures, asserts nothing): a Deployment of N replicas (default 200,
//! `KENNEL_BENCH_REPLICAS` to change) against the real in-process API server (TLS + token,
//! SQLite), with the test kubelet fixture turning pods Running/Ready. Prints the time until all
//! N are available, the time of a full rolling update (25% surge / 25% unavailable), and the
//! process's CPU seconds and RSS (API server, controllers and fixture share this process).

#[path = "../tests/common/kubelet.rs"]
mod kubelet;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kennel_apiserver::ApiServerConfig;
use kennel_controllers::ControllerConfig;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the valid, writable buffer we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_done(api: &Api<Deployment>, name: &str, n: i32, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(d) = api.get(name).await {
            let s = d.status.clone().unwrap_or_default();
            if s.observed_generation >= d.metadata.generation
                && s.replicas == Some(n)
                && s.updated_replicas == Some(n)
                && s.available_replicas == Some(n)
            {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < timeout,
            "deployment did not finish in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: i32 = std::env::var("KENNEL_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = kennel_apiserver::start(ApiServerConfig::new(dir.path()))
        .await
        .expect("start API server");
    let client = kennel_apiserver::testing::admin_client(&api).await;
    let controllers = tokio::spawn(kennel_controllers::run(
        ControllerConfig {
            identity: "bench".into(),
            leader_elect: false,
            root_ca_pem: None,
        },
        client.clone(),
    ));
    let fixture = tokio::spawn(kubelet::run(client.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu0, rss0) = (cpu_seconds(), rss_kib("VmRSS:"));

    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
            },
        },
    }))
    .unwrap();
    let timeout = Duration::from_secs(600);
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let created = wait_done(&deps, "bench", n, timeout).await;
    let cpu1 = cpu_seconds();
    deps.patch(
        "bench",
        &PatchParams::default(),
        &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}})),
    )
    .await
    .expect("update");
    let rolled = wait_done(&deps, "bench", n, timeout).await;
    let cpu2 = cpu_seconds();
    println!(
        "deployment of {n} replicas (kubelet fixture: {:?} start delay)",
        kubelet::START_DELAY
    );
    println!(
        "  create -> all available : {:>8.2} s   (cpu {:.2} s)",
        created.as_secs_f64(),
        cpu1 - cpu0
    );
    println!(
        "  rolling update          : {:>8.2} s   (cpu {:.2} s)",
        rolled.as_secs_f64(),
        cpu2 - cpu1
    );
    println!(
        "  process cpu total       : {:>8.2} s   rss {} MiB (before {} MiB, peak {} MiB)",
        cpu_seconds(),
        rss_kib("VmRSS:") / 1024,
        rss0 / 1024,
        rss_kib("VmHWM:") / 1024
    );
    controllers.abort();
    fixture.abort();
}
