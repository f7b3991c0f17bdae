//! A container crossing its memory limit: the time from StartContainer returning to `OOMKilled`
//! in kennel-cri's ContainerStatus (busybox `dd` filling a 64 MiB buffer under a 4 MiB limit, in one
//! pod VM restored from a template), beside runc running the same hog under the same limit on
//! the host (`runc start` → the process killed, the cgroup's `oom_kill` count read). Both include
//! the hog's climb to its limit, which takes well under a second. Prints figures, asserts nothing.
//!
//! `eval "$(bash scripts/build-guest 2>/dev/null)" && cargo build --release -p cri-shim -p vmm &&
//!  cargo bench -p kennel-tests --bench oom` (root; `KENNEL_BENCH_ROUNDS=N`, default 10).

#[path = "../tests/cri/harness.rs"]
mod harness;

use k8s_cri::v1 as cri;
use kennel_tests::runc::RuncBaseline;
use std::time::{Duration, Instant};

const LIMIT: i64 = 4 << 20;
/// One 64 MiB buffer filled from /dev/zero: the limit is crossed after 4 MiB of page faults.
const HOG: [&str; 5] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
const GIVE_UP: Duration = Duration::from_secs(300);

fn secs(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let all: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    format!(
        "median {:.2} s, min {:.2} s, max {:.2} s (runs: {})",
        s[s.len() / 2],
        s[0],
        s[s.len() - 1],
        all.join(", ")
    )
}

/// One hog in `pod`: StartContainer → OOMKilled, in seconds (or why not).
async fn kennel_round(
    c: &mut harness::Cri,
    pod: &str,
    cfg: &cri::PodSandboxConfig,
    image: &str,
    attempt: u32,
) -> Result<f64, String> {
    let id =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "hog".into(),
                    attempt,
                }),
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: HOG.iter().map(|s| s.to_string()).collect(),
                linux: Some(cri::LinuxContainerConfig {
                    resources: Some(cri::LinuxContainerResources {
                        memory_limit_in_bytes: LIMIT,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .into_inner()
        .container_id;
    c.rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer: {e}"))?;
    let t = Instant::now();
    let result = loop {
        let s =
            c.rt.container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| format!("ContainerStatus: {e}"))?
            .into_inner()
            .status
            .unwrap_or_default();
        if s.state == cri::ContainerState::ContainerExited as i32 {
            break if s.reason == "OOMKilled" {
                Ok(t.elapsed().as_secs_f64())
            } else {
                Err(format!("exited with {} ({})", s.exit_code, s.reason))
            };
        }
        if t.elapsed() > GIVE_UP {
            break Err(format!("still running after {GIVE_UP:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.rt.remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .map_err(|e| format!("RemoveContainer: {e}"))?;
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: u32 = std::env::var("KENNEL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let mut c = harness::Cri::start("bench").await;
    let image = format!("{}/busybox:latest", c.registry_host);
    c.pull(&image).await;
    let cfg = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "oom-bench".into(),
            namespace: "default".into(),
            uid: "oom-bench-uid".into(),
            attempt: 0,
        }),
        hostname: "oom-bench".into(),
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

    let store = images::store::Store::open(c.dir.path().join("images")).expect("image store");
    let work = tempfile::tempdir().unwrap();
    let runc = RuncBaseline::prepare(&store, &image, work.path()).expect("runc bundle");

    let (mut kennel, mut host) = (Vec::new(), Vec::new());
    let (mut kennel_bad, mut host_bad) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        match kennel_round(&mut c, &pod, &cfg, &image, i).await {
            Ok(s) => kennel.push(s),
            Err(e) => kennel_bad.push(e),
        }
        let id = format!("kcri-oom-{}-{i}", std::process::id());
        match runc.run_oom_once(&id, LIMIT as u64, &HOG.join(" ")) {
            Ok(r) if r.oom_kills > 0 => host.push(r.killed_after.as_secs_f64()),
            Ok(r) => host_bad.push(format!(
                "ended without an OOM kill after {:?}",
                r.killed_after
            )),
            Err(e) => host_bad.push(format!("{e:#}")),
        }
    }
    let _ =
        c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    let _ =
        c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
    println!("\ncontainer at a 4 MiB limit → OOMKilled ({rounds} rounds each):");
    println!(
        "  kennel-cri (pod VM, StartContainer → ContainerStatus OOMKilled): {}",
        secs(&kennel)
    );
    println!(
        "  runc on the host (runc start → process killed, oom_kill > 0):  {}",
        secs(&host)
    );
    for e in kennel_bad {
        println!("  kennel-cri round not OOMKilled: {e}");
    }
    for e in host_bad {
        println!("  runc round not OOM-killed: {e}");
    }
}
