//! `kennel up` figures: idle memory of the whole process tree (kennel up + kennel-cri, no pods),
//! and `kubectl apply` of a pod → Ready, split into control-plane time (apply → the node agent
//! calling RunPodSandbox, read from its log) and runtime time (RunPodSandbox → Ready seen by
//! kubectl), median of 5 (each pod deleted before the next; one VM at a time). Prints figures,
//! asserts nothing.
//!
//! `eval "$(bash scripts/build-guest)"; cargo build --release -p kennel -p cri-shim -p vmm &&
//!  cargo bench -p kennel-tests --bench cluster` (root; `KENNEL_BENCH_ROUNDS=N`, default 5).

#[path = "../tests/cluster/harness.rs"]
mod harness;

use std::time::{Duration, Instant, SystemTime};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The wall-clock time of the agent's `RunPodSandbox pod=default/<name>` log line.
fn run_sandbox_at(log: &str, name: &str) -> Option<SystemTime> {
    let needle = format!("pod=default/{name}");
    let line = log
        .lines()
        .find(|l| l.contains("RunPodSandbox") && l.contains(&needle))?;
    let plain: String = {
        // Strip ANSI colour codes.
        let mut out = String::new();
        let mut esc = false;
        for ch in line.chars() {
            match (esc, ch) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    let ts = plain.split_whitespace().next()?;
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(t.timestamp_nanos_opt()? as u64))
}

fn tree_rss_kib(c: &harness::Cluster) -> (u64, u64) {
    let mut pids = c.pids_mentioning("kennel up");
    pids.extend(c.pids_mentioning("kennel-cri"));
    pids.sort();
    pids.dedup();
    let mut rss = 0;
    let mut pss = 0;
    for pid in pids {
        if let Ok(f) = kennel_tests::procfs::footprint(pid as u32, u64::MAX) {
            rss += f.own_kib + f.guest_kib;
            pss += f.own_pss_kib;
        }
    }
    (rss, pss)
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("KENNEL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let c = harness::Cluster::start("bench").await;
    let node = c.node.clone();
    let reg = c.registry_host.clone();
    let t = Instant::now();
    while c.k(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]) != "True"
    {
        assert!(t.elapsed() < Duration::from_secs(120), "node never Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, pss) = tree_rss_kib(&c);
    let (mut cp, mut rt, mut total) = (vec![], vec![], vec![]);
    for i in 0..rounds {
        let name = format!("bench-{i}");
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: {reg}/busybox:latest\n    command: [sleep, \"100000\"]\n"
        );
        let t0 = SystemTime::now();
        let w0 = Instant::now();
        c.apply(&yaml);
        c.wait_pod(
            &name,
            ".status.conditions[?(@.type==\"Ready\")].status",
            Duration::from_secs(600),
            |s| s == "True",
        );
        let ready = w0.elapsed().as_secs_f64();
        let log = std::fs::read_to_string(c.dir.path().join("kennel-up.log")).unwrap_or_default();
        if let Some(at) = run_sandbox_at(&log, &name) {
            let control = at.duration_since(t0).unwrap_or_default().as_secs_f64();
            cp.push(control);
            rt.push(ready - control);
        }
        total.push(ready);
        c.k(&["delete", "pod", &name, "--wait=true", "--timeout=300s"]);
    }
    println!("\nkennel up, idle (no pods): process tree RSS {:.1} MiB, PSS {:.1} MiB (kennel up + kennel-cri; k3s is ~500 MB)", rss as f64 / 1024.0, pss as f64 / 1024.0);
    println!("kubectl apply → pod Ready ({rounds} rounds, one busybox pod each, restored from a template):");
    println!(
        "  total median {:.2} s (runs: {})",
        median(&mut total.clone()),
        total
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !cp.is_empty() {
        println!("  control plane (apply → RunPodSandbox) median {:.3} s; runtime (RunPodSandbox → Ready) median {:.2} s", median(&mut cp), median(&mut rt));
    }
}
