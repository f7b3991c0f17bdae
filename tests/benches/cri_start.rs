//! "Start a container from scratch" through kennel-cri (RunPodSandbox → CreateContainer →
//! StartContainer → StopContainer → RemoveContainer → StopPodSandbox → RemovePodSandbox, a
//! busybox `sleep 3600` in its own VM restored from a template) beside runc running the same
//! busybox image on the host (create → start → kill → delete), in the same run. Prints figures,
//! asserts nothing.
//!
//! `eval "$(bash scripts/build-guest 2>/dev/null)" && cargo build --release -p cri-shim -p vmm &&
//!  cargo bench -p kennel-tests --bench cri_start` (root; `KENNEL_BENCH_ROUNDS=N`, default 3).

#[path = "../tests/cri/harness.rs"]
mod harness;

use k8s_cri::v1 as cri;
use kennel_tests::runc::RuncBaseline;
use std::time::{Duration, Instant};

const STEPS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

async fn kennel_round(c: &mut harness::Cri, image: &str, i: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    let mut t = Instant::now();
    let mut lap = |times: &mut Vec<Duration>| {
        times.push(t.elapsed());
        t = Instant::now();
    };
    let cfg = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("bench-{i}"),
            namespace: "default".into(),
            uid: format!("bench-uid-{i}"),
            attempt: 0,
        }),
        hostname: format!("bench-{i}"),
        ..Default::default()
    };
    let pod =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.server_log()))
        .into_inner()
        .pod_sandbox_id;
    lap(&mut times);
    let id =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "sleep".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }),
            sandbox_config: Some(cfg),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    lap(&mut times);
    c.rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    lap(&mut times);
    c.rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    lap(&mut times);
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    lap(&mut times);
    c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    lap(&mut times);
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    lap(&mut times);
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("KENNEL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut c = harness::Cri::start("bench").await;
    let image = format!("{}/busybox:latest", c.registry_host);
    c.pull(&image).await;
    // The template is built (or found in the cache) by a first, uncounted round.
    let t = Instant::now();
    kennel_round(&mut c, &image, 0).await;
    println!(
        "warm-up round (template build when not cached): {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let store = images::store::Store::open(c.dir.path().join("images")).expect("image store");
    let work = tempfile::tempdir().unwrap();
    let runc = RuncBaseline::prepare(&store, &image, work.path()).expect("runc bundle");

    let mut kennel: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    let mut runc_steps: Vec<(&'static str, Vec<Duration>)> = Vec::new();
    for i in 1..=rounds {
        for (k, d) in kennel_round(&mut c, &image, i)
            .await
            .into_iter()
            .enumerate()
        {
            kennel[k].push(d);
        }
        let r = runc
            .run_once(&format!("kcri-bench-{}-{i}", std::process::id()))
            .expect("runc round");
        for (step, d) in r.steps {
            match runc_steps.iter_mut().find(|(s, _)| *s == step) {
                Some((_, v)) => v.push(d),
                None => runc_steps.push((step, vec![d])),
            }
        }
    }
    println!("\nkennel-cri, busybox `sleep 3600` in a pod VM (median of {rounds}):");
    let mut total = Duration::ZERO;
    for (k, step) in STEPS.iter().enumerate() {
        let m = median(kennel[k].clone());
        total += m;
        let all: Vec<String> = kennel[k].iter().map(|d| format!("{:.0}", ms(*d))).collect();
        println!(
            "  {step:<18} {:>10.1} ms   (runs: {} ms)",
            ms(m),
            all.join(", ")
        );
    }
    println!("  {:<18} {:>10.1} ms", "total", ms(total));
    println!("\nrunc, the same image on the host (median of {rounds}):");
    let mut rtotal = Duration::ZERO;
    for (step, v) in &runc_steps {
        let m = median(v.clone());
        rtotal += m;
        println!("  {step:<18} {:>10.1} ms", ms(m));
    }
    println!("  {:<18} {:>10.1} ms", "total", ms(rtotal));
}
