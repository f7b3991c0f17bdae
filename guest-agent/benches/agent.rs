//! Prints figures (never asserts timings): create + start + wait of `true` through the
//! agent on this host (the agent in its own namespaces, driven over a Unix socket), then
//! the same with remove included, and an exec round trip.
//!
//! Run as root: `cargo bench -p kennel-agent --bench agent`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use agent_proto::pb;
use common::*;

const RUNS: usize = 30;

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "{name:<40} n={:<3} min {:7.2} ms  median {:7.2} ms  mean {:7.2} ms  max {:7.2} ms",
        v.len(),
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(mean),
        ms(v[v.len() - 1])
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (agent, mut c) = TestAgent::start().await;
        let mut cycle = Vec::new();
        let mut with_remove = Vec::new();
        for i in 0..RUNS {
            let id = format!("b{i}");
            let t0 = Instant::now();
            c.create_container(create_req(&agent, &id, spec(&["true"], Some(64 << 20))))
                .await
                .expect("create");
            c.start_container(pb::ContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("start");
            let w = c
                .wait_process(preq(&id, ""))
                .await
                .expect("wait")
                .into_inner();
            assert_eq!(w.exit_code, 0);
            cycle.push(t0.elapsed());
            c.remove_container(pb::RemoveContainerRequest { container_id: id })
                .await
                .expect("remove");
            with_remove.push(t0.elapsed());
        }
        c.create_container(create_req(&agent, "x", spec(&["sleep", "1000"], None)))
            .await
            .expect("create");
        c.start_container(pb::ContainerRequest {
            container_id: "x".into(),
        })
        .await
        .expect("start");
        let mut exec = Vec::new();
        for i in 0..RUNS {
            let t0 = Instant::now();
            let exec_id = format!("e{i}");
            c.exec_process(pb::ExecProcessRequest {
                container_id: "x".into(),
                exec_id: exec_id.clone(),
                oci_process_json: process(&["true"]),
            })
            .await
            .expect("exec");
            c.wait_process(preq("x", &exec_id)).await.expect("wait");
            exec.push(t0.elapsed());
        }
        let mut health = Vec::new();
        for _ in 0..RUNS {
            let t0 = Instant::now();
            c.health(pb::Empty {}).await.expect("health");
            health.push(t0.elapsed());
        }
        println!("kennel-agent on the host (unix socket, busybox overlay rootfs)");
        summary("create+start+wait `true`", cycle);
        summary("create+start+wait+remove `true`", with_remove);
        summary("exec+wait `true` in a running container", exec);
        summary("Health round trip", health);
    });
}
