//! The CRI client suite against a real `kennel-cri`: its node network in a namespace made by
//! the test, images from a loopback `docker-registry`, pod VMs restored from one template.
//! One sandbox carries most checks (every VM start is precious on this emulating host):
//! runtime info; sandbox attributes byte-for-byte, filters, name reservation; idempotent
//! stop/remove of unknown ids; image pull/status/list; containers through every state; CRI
//! logs; ExecSync (output, exit code, timeout); DNS and hostname in the guest; the pod IP
//! serving kubia to the node namespace; OOMKilled; a kennel-cri restart re-attaching to the
//! running VM; the same CRI contract checked by a Python grpcio client (`cri/client.py`) with
//! each `:authority` gRPC clients send on a Unix socket; CRI streaming (`cri/streaming.rs`:
//! Exec, Attach and PortForward URLs over WebSocket); volumes from CRI mounts shaped as kubelet
//! sends them (`cri/volumes.rs`); stop/remove of the sandbox.

#[path = "cri/harness.rs"]
mod harness;
#[path = "cri/streaming.rs"]
mod streaming;
#[path = "cri/volumes.rs"]
mod volumes;
#[path = "cri/ws.rs"]
mod ws;

use harness::Cri;
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;

/// How long a container may take to reach a state: create/start/exit of a busybox container
/// is seconds of emulated guest kernel work here; a minute on a busy machine.
const STATE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a hog may take from StartContainer to OOMKilled. Filling memory is page faults,
/// which this host emulates at ~100 KiB/s in a busy guest, so the hog's limit is small.
const OOM_TIMEOUT: Duration = Duration::from_secs(300);
/// StopContainer's timeout for the `sleep` container (which ignores SIGTERM as PID 1).
const STOP_TIMEOUT: i64 = 10;
/// The hog's memory limit.
const HOG_LIMIT: i64 = 4 << 20;
/// Hogs run one after another in one pod: each must be OOMKilled, the pod stays alive
/// (`cargo bench --bench oom` runs ten and prints the figures).
const HOGS: u32 = 2;

fn sandbox_config(cri: &Cri, name: &str) -> cri::PodSandboxConfig {
    let labels: HashMap<String, String> = [
        ("app".to_string(), "web".to_string()),
        (
            "odd/key.é".to_string(),
            " spaced \"quoted\"\n\u{1F600} ".to_string(),
        ),
    ]
    .into();
    let annotations: HashMap<String, String> = [
        (
            "kennel.test/blob".to_string(),
            "{\"a\": [1, 2]}\t\\".to_string(),
        ),
        ("empty".to_string(), String::new()),
    ]
    .into();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: cri.log_dir(name).display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels,
        annotations,
        ..Default::default()
    }
}

fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    memory_limit: i64,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), format!("{name} ✓"))].into(),
        linux: (memory_limit > 0).then(|| cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: memory_limit,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn status(cri: &mut Cri, id: &str) -> cri::ContainerStatus {
    cri.rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .unwrap()
}

async fn wait_state(cri: &mut Cri, id: &str, state: cri::ContainerState) -> cri::ContainerStatus {
    wait_state_within(cri, id, state, STATE_TIMEOUT).await
}

async fn wait_state_within(
    cri: &mut Cri,
    id: &str,
    state: cri::ContainerState,
    timeout: Duration,
) -> cri::ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(cri, id).await;
        if s.state == state as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not reach {state:?} within {timeout:?}: {s:?}\n{}",
            cri.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_start(
    cri: &mut Cri,
    pod: &str,
    cfg: &cri::PodSandboxConfig,
    c: cri::ContainerConfig,
) -> String {
    let id = cri
        .rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(c),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    cri.rt
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("StartContainer");
    id
}

async fn exec(
    cri: &mut Cri,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    cri.rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

/// Removes container `id`, checks ContainerStatus then says NotFound.
async fn remove_and_check_gone(cri: &mut Cri, id: &str, what: &str) {
    cri.rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer ({what}): {e}"));
    let e = cri
        .rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{what}: {e}");
}

async fn list_sandboxes(cri: &mut Cri, filter: cri::PodSandboxFilter) -> Vec<cri::PodSandbox> {
    cri.rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_runtime_end_to_end() {
    let mut cri = Cri::start("t").await;

    // --- runtime info ---
    let v = cri
        .rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("kennel", "v1")
    );
    let st = cri
        .rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    for c in ["RuntimeReady", "NetworkReady"] {
        assert!(
            conds.iter().any(|x| x.r#type == c && x.status),
            "{c}: {conds:?}\n{}",
            cri.server_log()
        );
    }
    assert!(st.info["config"].contains("cgroupfs"));
    let rc = cri
        .rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    cri.rt
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "10.244.7.0/24".into(),
                }),
            }),
        })
        .await
        .expect("UpdateRuntimeConfig");
    let st = cri
        .rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(st.info["config"].contains("10.244.7.0/24"), "{:?}", st.info);
    let e = cri.rt.exec(cri::ExecRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("container_id"), "{e}");

    // --- unknown ids ---
    let unknown = "0".repeat(64);
    cri.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .expect("stop unknown sandbox is OK");
    cri.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .expect("remove unknown sandbox is OK");
    cri.rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: unknown.clone(),
        })
        .await
        .expect("remove unknown container is OK");
    cri.rt
        .stop_container(cri::StopContainerRequest {
            container_id: unknown.clone(),
            timeout: 0,
        })
        .await
        .expect("stop unknown container is OK (the CRI makes it idempotent)");
    let e = cri
        .rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: unknown.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = cri
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("metadata"), "{e}");

    // --- images ---
    let busybox = format!("{}/busybox:latest", cri.registry_host);
    let kubia = format!("{}/kubia:latest", cri.registry_host);
    for image in [&busybox, &kubia] {
        let r = cri.pull(image).await;
        assert!(r.image_ref.starts_with("sha256:"), "{r:?}");
        let by_id = cri
            .img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: r.image_ref.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(by_id.image.unwrap().repo_tags.contains(image));
    }
    let list = cri
        .img
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 2);

    // --- sandbox ---
    let cfg = sandbox_config(&cri, "pod-a");
    let t0 = Instant::now();
    let pod = cri
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cri.server_log()))
        .into_inner()
        .pod_sandbox_id;
    eprintln!("RunPodSandbox took {:?}", t0.elapsed());
    assert_eq!(pod.len(), 64);
    let e = cri
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    let s = cri
        .rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod[..12].into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let pst = s.status.unwrap();
    assert_eq!(pst.id, pod);
    assert_eq!(pst.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pst.labels, cfg.labels, "labels byte-for-byte");
    assert_eq!(
        pst.annotations, cfg.annotations,
        "annotations byte-for-byte"
    );
    assert_eq!(pst.metadata, cfg.metadata);
    assert!(pst.created_at > 0);
    let ip = pst.network.unwrap().ip;
    let prefix = cri.pod_cidr.trim_end_matches("0/24").to_string();
    assert!(ip.starts_with(&prefix), "pod IP {ip} in {}", cri.pod_cidr);
    assert!(s.info["info"].contains("from_template"));
    let sel =
        |k: &str, v: &str| -> HashMap<String, String> { [(k.to_string(), v.to_string())].into() };
    let filters = [
        (
            "label app=web",
            1,
            cri::PodSandboxFilter {
                label_selector: sel("app", "web"),
                ..Default::default()
            },
        ),
        (
            "label app=db",
            0,
            cri::PodSandboxFilter {
                label_selector: sel("app", "db"),
                ..Default::default()
            },
        ),
        (
            "state NOTREADY",
            0,
            cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            },
        ),
        (
            "id prefix",
            1,
            cri::PodSandboxFilter {
                id: pod[..8].into(),
                ..Default::default()
            },
        ),
    ];
    for (what, want, filter) in filters {
        assert_eq!(
            list_sandboxes(&mut cri, filter).await.len(),
            want,
            "filter {what}"
        );
    }

    // --- a container that writes and exits: logs in the CRI format, Completed ---
    let t0 = Instant::now();
    let echo = create_start(
        &mut cri,
        &pod,
        &cfg,
        container_config(
            "echo",
            &busybox,
            &["sh", "-c", "echo hello; echo oops >&2; printf partial"],
            0,
        ),
    )
    .await;
    let s = wait_state(&mut cri, &echo, cri::ContainerState::ContainerExited).await;
    eprintln!("echo container create→exited took {:?}", t0.elapsed());
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    assert!(
        s.started_at >= s.created_at && s.finished_at >= s.started_at,
        "{s:?}"
    );
    assert_eq!(s.image_ref, status_image_ref(&mut cri, &busybox).await);
    assert_eq!(s.labels["container"], "echo");
    assert_eq!(s.annotations["note"], "echo ✓");
    let log_path = cri.log_dir("pod-a").join("echo/0.log");
    assert_eq!(s.log_path, log_path.display().to_string());
    let log = std::fs::read_to_string(&log_path).expect("container log");
    let lines: Vec<_> = log
        .lines()
        .map(|l| cri_shim::logs::parse_line(l).unwrap())
        .collect();
    let find = |stream: &str, tag: bool, content: &str| {
        lines
            .iter()
            .any(|l| l.stream.as_str() == stream && l.partial == tag && l.content == content)
    };
    assert!(find("stdout", false, "hello"), "{log}");
    assert!(find("stderr", false, "oops"), "{log}");
    assert!(find("stdout", true, "partial"), "{log}");
    let e = cri
        .rt
        .start_container(cri::StartContainerRequest {
            container_id: echo.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    // --- a long-running container: exec, DNS, hostname, stats, stop ---
    let vols = volumes::lay_out(cri.dir.path());
    let mut sleeper_cfg = container_config("sleeper", &busybox, &["sleep", "3600"], 0);
    sleeper_cfg.mounts = volumes::sleeper_mounts(&vols);
    let sleeper = create_start(&mut cri, &pod, &cfg, sleeper_cfg).await;
    wait_state(&mut cri, &sleeper, cri::ContainerState::ContainerRunning).await;
    // --- volumes: a kubelet configMap dir copied in (ro, subPath), a shared emptyDir ---
    volumes::checks(&mut cri, &pod, &cfg, &busybox, &sleeper, &vols).await;
    let r = exec(&mut cri, &sleeper, &["cat", "/etc/resolv.conf"], 0)
        .await
        .expect("ExecSync");
    let resolv = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let r = exec(
        &mut cri,
        &sleeper,
        &["sh", "-c", "hostname; echo $HOSTNAME"],
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "pod-a\npod-a\n",
        "hostname, and the container's environment inherited by the exec"
    );
    let r = exec(
        &mut cri,
        &sleeper,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        30,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
        (7, &b"out\n"[..], &b"err\n"[..])
    );
    let e = exec(&mut cri, &sleeper, &["sleep", "60"], 2)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    let stats = cri
        .rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: sleeper.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    cri.rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: sleeper.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    let stats = cri
        .rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: sleeper.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let available = stats.memory.unwrap().available_bytes.expect("a limit now");
    assert!(
        available.value > 0 && available.value < 96 << 20,
        "{available:?}"
    );
    let res = status(&mut cri, &sleeper)
        .await
        .resources
        .unwrap()
        .linux
        .unwrap();
    assert_eq!(res.memory_limit_in_bytes, 96 << 20);
    let ps = cri
        .rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    let linux = ps.linux.unwrap();
    assert_eq!(linux.containers.len(), 1, "only the sleeper runs");
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let running = cri
        .rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        running.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [sleeper.as_str()]
    );
    cri.rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: sleeper.clone(),
        })
        .await
        .expect("ReopenContainerLog");

    // --- streaming: Exec over the URL kennel-cri returns (WebSocket v5), tokens single use ---
    streaming::exec_checks(&mut cri, &sleeper, &echo).await;

    // --- kubia on the pod IP, reached from the node's namespace ---
    let web = create_start(
        &mut cri,
        &pod,
        &cfg,
        container_config("web", &kubia, &[], 0),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        match cri.http_get(&format!("http://{ip}:8080/")) {
            Ok(b) => break b,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                let web_status = status(&mut cri, &web).await;
                let script = format!("wget -q -O- http://127.0.0.1:8080/ 2>&1; ping -c 1 -W 5 {}1 2>&1; cat /proc/net/snmp /proc/net/dev; netstat -tln", prefix);
                let inside = exec(&mut cri, &sleeper, &["sh", "-c", &script], 60).await;
                let node = std::process::Command::new("ip").args(["netns", "exec", &cri.netns, "sh", "-c", "ip neigh; curl -v -m 5 http://${IP}:8080/ 2>&1; cat /proc/net/snmp /proc/net/dev; ethtool -k kcri0 2>&1 | head -20"]).env("IP", &ip).output().unwrap();
                let inside = inside.map(|r| String::from_utf8_lossy(&r.stdout).into_owned());
                panic!(
                    "kubia on {ip}:8080: {e}\nweb: {web_status:?}\ninside: {}\nnode: {}\n{}",
                    inside.unwrap_or_else(|e| e.to_string()),
                    String::from_utf8_lossy(&node.stdout),
                    cri.server_log()
                );
            }
        }
    };
    assert!(body.contains("You've hit pod-a"), "{body}");
    // --- streaming: PortForward to kubia's 8080 (kubelet's WebSocket port-forward) ---
    streaming::port_forward_checks(&mut cri, &pod, &sleeper, &ip).await;

    // --- restart: kennel-cri re-attaches to the running VM, its agent and its log streams ---
    let ticker = create_start(
        &mut cri,
        &pod,
        &cfg,
        container_config(
            "ticker",
            &busybox,
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo tick $i; sleep 1; done",
            ],
            0,
        ),
    )
    .await;
    let ticker_log = cri.log_dir("pod-a").join("ticker/0.log");
    let ticks = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("stdout F tick"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while ticks(&ticker_log) < 2 {
        assert!(
            Instant::now() < deadline,
            "ticker never logged\n{}",
            cri.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cri.restart().await;
    let before = ticks(&ticker_log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while ticks(&ticker_log) < before + 3 {
        assert!(
            Instant::now() < deadline,
            "no log lines after the restart ({before} before)\n{}",
            cri.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // --- streaming: Attach to the ticker (its output fanned out beside the log file) ---
    streaming::attach_checks(&mut cri, &ticker).await;
    streaming::attach_stdin_checks(&mut cri, &pod, &cfg, &busybox).await;
    let s = cri
        .rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status.unwrap().state,
        cri::PodSandboxState::SandboxReady as i32,
        "{}",
        cri.server_log()
    );
    let r = exec(&mut cri, &sleeper, &["echo", "still here"], 60)
        .await
        .expect("ExecSync after restart");
    assert_eq!(r.stdout, b"still here\n");

    // --- the same contract through Python grpcio (grpc-core), with each authority clients send ---
    python_client_suite(&cri, &pod, &sleeper, &ip).await;

    // --- stop (SIGTERM ignored by sleep as PID 1 → SIGKILL after the timeout), remove ---
    // The deadline kubelet gives the call: the timeout plus its 2 min runtime request timeout.
    let mut req = tonic::Request::new(cri::StopContainerRequest {
        container_id: sleeper.clone(),
        timeout: STOP_TIMEOUT,
    });
    req.set_timeout(Duration::from_secs(STOP_TIMEOUT as u64 + 120));
    let t0 = Instant::now();
    cri.rt.stop_container(req).await.expect("StopContainer");
    eprintln!(
        "StopContainer(timeout {STOP_TIMEOUT} s) of a sleep ignoring SIGTERM returned after {:?}",
        t0.elapsed()
    );
    let s = status(&mut cri, &sleeper).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    assert_eq!(s.exit_code, 137, "{s:?}");
    cri.rt
        .stop_container(cri::StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 1,
        })
        .await
        .expect("stop again is fine");
    remove_and_check_gone(&mut cri, &sleeper, "stopped").await;
    cri.rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: sleeper.clone(),
        })
        .await
        .expect("remove again is fine");

    // created, never started: removable
    let idle = cri
        .rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("idle", &busybox, &["true"], 0)),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    assert_eq!(
        status(&mut cri, &idle).await.state,
        cri::ContainerState::ContainerCreated as i32
    );
    remove_and_check_gone(&mut cri, &idle, "created").await;
    // exited: removable, its log file stays for the kubelet
    cri.rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: echo.clone(),
        })
        .await
        .expect("remove exited");
    assert!(log_path.exists());
    // stopping a removed container is fine too (idempotent, as kubelet expects)
    cri.rt
        .stop_container(cri::StopContainerRequest {
            container_id: echo.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer of a removed container");

    // --- OOM: a 4 MiB limit and dd filling a 64 MiB buffer, HOGS times in one pod (the restart
    // count is the CRI attempt); each must end OOMKilled while the ticker keeps ticking ---
    let tick_times = |path: &std::path::Path| -> Vec<i64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| cri_shim::logs::parse_line(l).ok())
            .filter(|l| l.stream.as_str() == "stdout" && l.content.starts_with("tick"))
            .filter_map(|l| l.timestamp.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .collect()
    };
    let loop_start = now_ns();
    let ticks_before = ticks(&ticker_log);
    let mut kill_secs = Vec::new();
    for attempt in 0..HOGS {
        let mut c = container_config(
            "hog",
            &busybox,
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
            HOG_LIMIT,
        );
        c.metadata.as_mut().unwrap().attempt = attempt;
        c.log_path = format!("hog/{attempt}.log");
        let hog = create_start(&mut cri, &pod, &cfg, c).await;
        let started = Instant::now();
        let s = wait_state_within(
            &mut cri,
            &hog,
            cri::ContainerState::ContainerExited,
            OOM_TIMEOUT,
        )
        .await;
        kill_secs.push(started.elapsed().as_secs_f64());
        assert_eq!(
            (s.reason.as_str(), s.metadata.as_ref().unwrap().attempt),
            ("OOMKilled", attempt),
            "{s:?}\n{}",
            cri.diagnostics()
        );
        remove_and_check_gone(&mut cri, &hog, "OOMKilled hog").await;
    }
    let loop_end = now_ns();
    let ticks_after = ticks(&ticker_log);
    let times = tick_times(&ticker_log);
    let gaps = |from: i64, to: i64| -> Vec<f64> {
        let t: Vec<i64> = times
            .iter()
            .copied()
            .filter(|&t| t >= from && t <= to)
            .collect();
        t.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e9).collect()
    };
    let during = gaps(loop_start, loop_end);
    let before = gaps(0, loop_start);
    eprintln!(
        "OOM loop: {HOGS} hogs OOMKilled, StartContainer → OOMKilled {}; ticker gaps before the hogs {}, during them {} ({} ticks in {:.0} s)",
        summary(&kill_secs),
        summary(&before),
        summary(&during),
        ticks_after - ticks_before,
        (loop_end - loop_start) as f64 / 1e9
    );
    assert!(
        ticks_after > ticks_before + 1,
        "the ticker stopped while the hogs ran ({ticks_before} → {ticks_after})\n{}",
        cri.diagnostics()
    );

    // --- a second pod: its own IP, reaches pod-a's kubia; its VMM killed → NOTREADY/EXITED ---
    let mut cfg_b = sandbox_config(&cri, "pod-b");
    let cgroup = format!("kennel-cri-test-{}", std::process::id());
    cfg_b.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: format!("/{cgroup}"),
        ..Default::default()
    });
    let pod_b = cri
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg_b.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox pod-b: {e}\n{}", cri.server_log()))
        .into_inner()
        .pod_sandbox_id;
    let sb = cri
        .rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_b.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ip_b = sb.status.unwrap().network.unwrap().ip;
    assert_ne!(ip_b, ip, "two pods, two IPs");
    let info: serde_json::Value = serde_json::from_str(&sb.info["info"]).unwrap();
    let vmm_pid = info["vmm"]["pid"]
        .as_i64()
        .expect("VMM pid in verbose info");
    // The VMM joined the pod's host cgroup (v1 memory hierarchy here, or the unified one).
    let cgroup_dirs: Vec<std::path::PathBuf> = ["memory", "cpu", "cpuacct", "pids", ""]
        .iter()
        .map(|h| std::path::Path::new("/sys/fs/cgroup").join(h).join(&cgroup))
        .filter(|d| d.is_dir())
        .collect();
    let procs: Vec<String> = cgroup_dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default())
        .collect();
    assert!(
        procs
            .iter()
            .any(|p| p.lines().any(|l| l == vmm_pid.to_string())),
        "VMM {vmm_pid} in {cgroup_dirs:?}: {procs:?}"
    );
    let b_sleeper = create_start(
        &mut cri,
        &pod_b,
        &cfg_b,
        container_config("sleeper", &busybox, &["sleep", "3600"], 0),
    )
    .await;
    let r = exec(
        &mut cri,
        &b_sleeper,
        &["wget", "-q", "-O", "-", &format!("http://{ip}:8080/")],
        120,
    )
    .await
    .expect("pod-to-pod ExecSync");
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("You've hit pod-a"),
        "{r:?}"
    );
    let killed = std::process::Command::new("kill")
        .args(["-9", &vmm_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = cri
            .rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_b.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if st.state == cri::PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod-b still ready after its VMM died\n{}",
            cri.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status(&mut cri, &b_sleeper).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    cri.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_b.clone(),
        })
        .await
        .expect("RemovePodSandbox of a dead pod");
    // The test made these (as kubelet would): remove them once the dead VMM has left them.
    let deadline = Instant::now() + Duration::from_secs(30);
    for d in &cgroup_dirs {
        while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // --- stop and remove the sandbox (idempotent) ---
    cri.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let s = cri
        .rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status.unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    let s = status(&mut cri, &web).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    assert!(
        cri.http_get(&format!("http://{ip}:8080/")).is_err(),
        "pod IP answers after stop"
    );
    cri.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("stop again");
    cri.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    cri.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("remove again");
    assert!(list_sandboxes(&mut cri, cri::PodSandboxFilter::default())
        .await
        .is_empty());
    let left = cri
        .rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
}

/// Runs tests/tests/cri/client.py (Debian python3-grpcio + python3-grpc-tools; /usr/bin/python3,
/// not a python3 earlier in PATH without them) against this kennel-cri, sandbox and running
/// container; it also runs one more sandbox (a long name, no hostname) and removes it.
async fn python_client_suite(cri: &Cri, pod: &str, container: &str, ip: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cri/client.py");
    let log_dir = cri.log_dir("long-name");
    let t0 = Instant::now();
    let run = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg("--socket")
        .arg(cri.socket())
        .args(["--sandbox", pod, "--container", container, "--pod-ip", ip])
        .arg("--long-name-pod")
        .arg(&log_dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the Python CRI suite finishes")
        .expect("/usr/bin/python3 runs (apt-get install python3-grpcio python3-grpc-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("Python grpcio CRI suite ({:?}):\n{stdout}", t0.elapsed());
    assert!(
        out.status.success(),
        "Python grpcio CRI suite failed ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        cri.server_log()
    );
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// "median m s, max x s (n)" of a list of seconds.
fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "(none)".into();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    format!(
        "median {:.1} s, max {:.1} s (n={})",
        s[s.len() / 2],
        s[s.len() - 1],
        s.len()
    )
}

async fn status_image_ref(cri: &mut Cri, image: &str) -> String {
    cri.img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .id
}
