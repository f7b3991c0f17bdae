//! In-VM self test: runs inside the guest next to kennel-agent (started by the agent with
//! the boot parameter `kennel_debug_exec=/selftest`) and drives it over AF_VSOCK loopback
//! (CID 1, port 1024): sandbox setup, an image disk found by serial mounted as the overlay
//! lower dir, a busybox container's output, an OOM kill under cgroup v2, an exec, and the
//! create+start+wait figure for `true`; then DestroySandbox (the agent reboots the VM).
//! Built statically and packed by `scripts/qemu-smoke.sh` with a disk of serial `img1`.

use std::time::{Duration, Instant};

use agent_proto::pb;

fn spec(args: &[&str], memory: Option<i64>) -> Vec<u8> {
    let mut s = serde_json::json!({
        "ociVersion": "1.0.2",
        "hostname": "ctr",
        "process": {"args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        ],
        "linux": {"resources": {"pids": {"limit": 64}}}
    });
    if let Some(m) = memory {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": m});
    }
    serde_json::to_vec(&s).unwrap_or_default()
}

fn create(id: &str, spec: Vec<u8>) -> pb::CreateContainerRequest {
    pb::CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec,
        rootfs: Some(pb::Rootfs {
            lower_dirs: vec!["/run/images/img1".into()],
            readonly: false,
        }),
        tty: false,
    }
}

fn preq(id: &str, exec_id: &str) -> pb::ProcessRequest {
    pb::ProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
    }
}

async fn run_one(
    c: &mut agent_proto::AgentClient,
    id: &str,
    spec: Vec<u8>,
) -> Result<(pb::WaitProcessResponse, Vec<u8>), tonic::Status> {
    c.create_container(create(id, spec)).await?;
    let mut out = c.read_stdout(preq(id, "")).await?.into_inner();
    let reader = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Ok(Some(chunk)) = out.message().await {
            v.extend_from_slice(&chunk.data);
        }
        v
    });
    c.start_container(pb::ContainerRequest {
        container_id: id.into(),
    })
    .await?;
    let w = c.wait_process(preq(id, "")).await?.into_inner();
    let out = reader.await.unwrap_or_default();
    c.remove_container(pb::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await?;
    Ok((w, out))
}

async fn selftest() -> Result<(), Box<dyn std::error::Error>> {
    let mut c = loop {
        match agent_proto::client::connect_vsock(1, agent_proto::DEFAULT_VSOCK_PORT).await {
            Ok(c) => break c,
            Err(e) => {
                println!("selftest: waiting for the agent: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let v = c.version(pb::Empty {}).await?.into_inner();
    println!(
        "selftest: agent {} protocol {}",
        v.agent_version, v.protocol_version
    );
    c.create_sandbox(pb::CreateSandboxRequest {
        hostname: "vm-selftest".into(),
        random_seed: vec![42; 32],
        ..Default::default()
    })
    .await?;
    let m = c
        .mount_storage(pb::MountStorageRequest {
            serial: "img1".into(),
            mount_point: "/run/images/img1".into(),
            fstype: "ext4".into(),
            readonly: true,
            options: String::new(),
        })
        .await?
        .into_inner();
    println!("selftest: image disk {}", m.device);

    let (w, out) = run_one(
        &mut c,
        "hello",
        spec(
            &["sh", "-c", "echo hello-from-vm; cat /etc/image-file"],
            Some(32 << 20),
        ),
    )
    .await?;
    println!(
        "selftest: hello exit {} output {:?}",
        w.exit_code,
        String::from_utf8_lossy(&out)
    );
    if w.exit_code != 0 || !out.starts_with(b"hello-from-vm\n") {
        return Err("hello container failed".into());
    }

    let (w, _) = run_one(
        &mut c,
        "hog",
        spec(
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
            Some(16 << 20),
        ),
    )
    .await?;
    println!(
        "selftest: hog signal {} oom_killed {}",
        w.signal, w.oom_killed
    );
    if !w.oom_killed {
        return Err("OOM kill not reported".into());
    }

    let mut times = Vec::new();
    for i in 0..5 {
        let t0 = Instant::now();
        let id = format!("t{i}");
        c.create_container(create(&id, spec(&["true"], None)))
            .await?;
        c.start_container(pb::ContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        c.wait_process(preq(&id, "")).await?;
        times.push(t0.elapsed());
        c.remove_container(pb::RemoveContainerRequest { container_id: id })
            .await?;
    }
    times.sort();
    println!(
        "selftest: create+start+wait `true` in the VM: min {:.1} ms median {:.1} ms max {:.1} ms (n=5)",
        times[0].as_secs_f64() * 1e3,
        times[2].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3
    );
    println!("SELFTEST OK");
    c.destroy_sandbox(pb::Empty {}).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = selftest().await {
        println!("SELFTEST FAILED: {e}");
        std::process::exit(1);
    }
}
