//! Persistent volumes as read-write virtio-blk disks, on real pod VMs through a real
//! `kennel-cri` (harness shared with `cri.rs`): a sparse 64 MiB ext4 image laid out as the node
//! agent does (`…/volumes/kubernetes.io~kennel-disk/<name>/kennel-disk.json`), pod A's busybox
//! writing into the volume (root, a subPath created in the guest, a read-only mount of the same
//! volume refusing writes), pod B refused the same image while A's VM holds it (the VMM's
//! exclusive lock), the host file read with `debugfs` once A is stopped and removed (the data
//! reached the host), then pod B — the same VM, the attach retried — reading it all back and
//! writing more, checked on the host again after B is gone. At most 2 VMs at once, no ExecSync:
//! the containers' output is read from their CRI log files.

#[path = "cri/harness.rs"]
mod harness;

use harness::Cri;
use k8s_cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

/// How long a container may take to run to its end (seconds of emulated guest work per
/// fork/exec/mount here).
const STATE_TIMEOUT: Duration = Duration::from_secs(240);

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse 64 MiB ext4 image.
fn make_image(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path));
}

/// The node agent's layout for volume `data` of pod `uid`: the directory holding
/// `kennel-disk.json` (written atomically).
fn lay_out(root: &Path, uid: &str, image: &Path) -> PathBuf {
    let dir = root
        .join("pods")
        .join(uid)
        .join("volumes")
        .join(cri_shim::pvdisk::DISK_PLUGIN)
        .join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let desc = cri_shim::pvdisk::DiskDescriptor {
        image: image.to_path_buf(),
        fs_type: "ext4".into(),
        read_only: false,
    };
    let tmp = dir.join(".kennel-disk.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&desc).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(cri_shim::pvdisk::DISK_FILE)).unwrap();
    dir
}

/// `debugfs -R "cat <path>"` of the image: what the host file holds.
fn debugfs_cat(image: &Path, path: &str) -> String {
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image))
}

fn mount(host: &Path, container: &str, readonly: bool) -> cri::Mount {
    cri::Mount {
        host_path: host.display().to_string(),
        container_path: container.into(),
        readonly,
        ..Default::default()
    }
}

fn sandbox_config(cri: &Cri, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: cri.log_dir(name).display().to_string(),
        ..Default::default()
    }
}

fn container_config(
    name: &str,
    image: &str,
    script: &str,
    mounts: Vec<cri::Mount>,
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
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        mounts,
        ..Default::default()
    }
}

async fn run_sandbox(cri: &mut Cri, cfg: &cri::PodSandboxConfig) -> String {
    match cri
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", cri.diagnostics()),
    }
}

async fn create(
    cri: &mut Cri,
    pod: &str,
    cfg: &cri::PodSandboxConfig,
    c: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    cri.rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(c),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

/// Starts container `id`, waits for it to exit, returns its exit code and its log's lines.
async fn start_and_finish(cri: &mut Cri, id: &str, log: &Path) -> (i32, String) {
    cri.rt
        .start_container(cri::StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("StartContainer");
    let deadline = Instant::now() + STATE_TIMEOUT;
    let status = loop {
        let s = cri
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .unwrap();
        if s.state == cri::ContainerState::ContainerExited as i32 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit within {STATE_TIMEOUT:?}: {s:?}\n{}",
            cri.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // CRI log lines: `<time> stdout|stderr F <text>`.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect();
    (status.exit_code, lines.join("\n"))
}

async fn stop_remove(cri: &mut Cri, pod: &str) {
    cri.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .expect("StopPodSandbox");
    cri.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .expect("RemovePodSandbox");
}

async fn volumes_info(cri: &mut Cri, pod: &str) -> serde_json::Value {
    let r = cri
        .rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    info["volumes"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_volume_disks_in_pod_vms() {
    let mut cri = Cri::start("pv").await;
    let busybox = format!("{}/busybox:latest", cri.registry_host);
    cri.pull(&busybox).await;
    let image = cri.dir.path().join("pv-data.img");
    make_image(&image);
    let kubelet = cri.dir.path().join("kubelet");

    // --- pod A writes: the volume's root, a subPath (made in the guest), a read-only view ---
    let vol_a = lay_out(&kubelet, "uid-pv-a", &image);
    let cfg_a = sandbox_config(&cri, "pv-a");
    let pod_a = run_sandbox(&mut cri, &cfg_a).await;
    let writer = container_config(
        "writer",
        &busybox,
        "echo hello-pv > /data/hello && echo via-sub > /applogs/sub.txt && \
         ls /data/logs/app; \
         if (echo x > /ro/nope) 2>/dev/null; then echo ro-writable; else echo ro-refused; fi; \
         echo writer-done",
        vec![
            mount(&vol_a, "/data", false),
            mount(&vol_a.join("logs/app"), "/applogs", false),
            mount(&vol_a, "/ro", true),
        ],
    );
    let w = match create(&mut cri, &pod_a, &cfg_a, writer).await {
        Ok(id) => id,
        Err(e) => panic!("CreateContainer writer: {e}\n{}", cri.diagnostics()),
    };
    let log = cri.log_dir("pv-a").join("writer/0.log");
    let (code, out) = start_and_finish(&mut cri, &w, &log).await;
    assert_eq!(code, 0, "writer: {out}\n{}", cri.diagnostics());
    assert_eq!(out, "sub.txt\nro-refused\nwriter-done", "writer output");
    // Three mounts of one volume: one disk attached.
    let vols = volumes_info(&mut cri, &pod_a).await;
    let vols = vols.as_array().expect("volumes in the verbose info");
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0]["image"], image.display().to_string());
    assert_eq!(vols[0]["read_only"], false);
    let slot = vols[0]["slot"].as_u64().unwrap();
    assert!(
        slot >= 4,
        "a read-write volume slot after the 4 image slots: {slot}"
    );

    // --- pod B, while A's VM holds the image: refused, naming the image ---
    let vol_b = lay_out(&kubelet, "uid-pv-b", &image);
    let cfg_b = sandbox_config(&cri, "pv-b");
    let pod_b = run_sandbox(&mut cri, &cfg_b).await;
    let reader = || {
        container_config(
            "reader",
            &busybox,
            "cat /data/hello /sub/sub.txt && echo from-b > /data/from-b && echo reader-done",
            vec![
                mount(&vol_b, "/data", false),
                mount(&vol_b.join("logs/app"), "/sub", false),
            ],
        )
    };
    let e = create(&mut cri, &pod_b, &cfg_b, reader())
        .await
        .expect_err("the image is in use by pod A's VM");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message().contains(&format!(
            "disk image {} is in use by another VM",
            image.display()
        )),
        "{e}"
    );

    // --- pod A goes: its data is on the host file ---
    stop_remove(&mut cri, &pod_a).await;
    assert_eq!(debugfs_cat(&image, "/hello"), "hello-pv\n");
    assert_eq!(debugfs_cat(&image, "/logs/app/sub.txt"), "via-sub\n");
    assert_eq!(
        debugfs_cat(&image, "/nope"),
        "",
        "the read-only mount wrote nothing"
    );
    let fsck = Command::new("e2fsck")
        .args(["-n", "-f"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "the filesystem is clean after the pod stopped: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );

    // --- pod B (same VM, the attach retried) reads it back and writes ---
    let r = match create(&mut cri, &pod_b, &cfg_b, reader()).await {
        Ok(id) => id,
        Err(e) => panic!("CreateContainer reader: {e}\n{}", cri.diagnostics()),
    };
    let log = cri.log_dir("pv-b").join("reader/0.log");
    let (code, out) = start_and_finish(&mut cri, &r, &log).await;
    assert_eq!(code, 0, "reader: {out}\n{}", cri.diagnostics());
    assert_eq!(out, "hello-pv\nvia-sub\nreader-done");
    stop_remove(&mut cri, &pod_b).await;
    assert_eq!(debugfs_cat(&image, "/from-b"), "from-b\n");
}
