//! Volumes through CRI mounts shaped as kubelet sends them (Kata's `shared_fs=none`): a
//! configMap directory in kubelet's atomic-writer layout (read-only, with a subPath file) is
//! copied into the guest; an emptyDir is one guest directory shared by two containers; a
//! read-write host path is refused with InvalidArgument naming it.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use tonic::Code;

/// Host paths of the pod's volumes.
pub struct Volumes {
    /// `…/kubernetes.io~configmap/cfg` (files `color` 0440 and `conf/app.ini`).
    pub config: PathBuf,
    /// `…/kubernetes.io~empty-dir/scratch` (a marker: the emptyDir lives in the guest).
    pub scratch: PathBuf,
}

/// Lays out the volumes as kubelet does under `<root>/pods/<uid>/volumes`.
pub fn lay_out(root: &Path) -> Volumes {
    let vols = root.join("pods/uid-a/volumes");
    let config = vols.join("kubernetes.io~configmap/cfg");
    let version = "..2026_12_03_16_00_00.000000001";
    std::fs::create_dir_all(config.join(version).join("conf")).unwrap();
    std::fs::write(config.join(version).join("color"), "blue").unwrap();
    std::fs::set_permissions(
        config.join(version).join("color"),
        std::fs::Permissions::from_mode(0o440),
    )
    .unwrap();
    std::fs::write(config.join(version).join("conf/app.ini"), "mode=fast\n").unwrap();
    symlink(version, config.join("..data")).unwrap();
    symlink("..data/color", config.join("color")).unwrap();
    symlink("..data/conf", config.join("conf")).unwrap();
    let scratch = vols.join("kubernetes.io~empty-dir/scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    Volumes { config, scratch }
}

fn mount(host: &Path, container: &str, readonly: bool) -> cri::Mount {
    cri::Mount {
        host_path: host.display().to_string(),
        container_path: container.into(),
        readonly,
        ..Default::default()
    }
}

/// The sleeper's mounts: the configMap at /etc/cfg, its `color` as a subPath at
/// /etc/color, the emptyDir at /scratch.
pub fn sleeper_mounts(v: &Volumes) -> Vec<cri::Mount> {
    vec![
        mount(&v.config, "/etc/cfg", true),
        mount(&v.config.join("color"), "/etc/color", true),
        mount(&v.scratch, "/scratch", false),
    ]
}

async fn sh(cri: &mut super::Cri, id: &str, script: &str) -> (i32, String, String) {
    let r = super::exec(cri, id, &["sh", "-c", script], 60)
        .await
        .unwrap_or_else(|e| panic!("exec {script:?}: {e}"));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Checks the sleeper's view, then a second container sharing the emptyDir.
pub async fn checks(
    cri: &mut super::Cri,
    pod: &str,
    cfg: &cri::PodSandboxConfig,
    busybox: &str,
    sleeper: &str,
    v: &Volumes,
) {
    let (code, out, err) = sh(
        cri,
        sleeper,
        "cat /etc/cfg/color; echo; cat /etc/cfg/conf/app.ini; cat /etc/color; echo; \
         stat -L -c %a /etc/cfg/color; echo shared > /scratch/f && echo wrote",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "blue\nmode=fast\nblue\n440\nwrote\n", "{err}");
    let (code, _, err) = sh(cri, sleeper, "echo x > /etc/cfg/new").await;
    assert_ne!(code, 0, "the configMap mount is read-only");
    assert!(err.contains("Read-only"), "{err}");
    let (_, out, _) = sh(cri, sleeper, "readlink /etc/cfg/color; ls -a /etc/cfg").await;
    assert!(
        out.starts_with("..data/color\n"),
        "atomic-writer layout in the guest: {out}"
    );

    // A read-write host path needs a shared filesystem: refused, naming the path.
    let rw = cri.dir.path().join("host-rw");
    std::fs::create_dir_all(&rw).unwrap();
    let mut c = super::container_config("rw", busybox, &["true"], 0);
    c.mounts = vec![mount(&rw, "/data", false)];
    let e = cri
        .rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(c),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains(&rw.display().to_string()), "{e}");

    // A second container sees what the first wrote to the emptyDir.
    let mut c = super::container_config("reader", busybox, &["sleep", "3600"], 0);
    c.mounts = vec![mount(&v.scratch, "/shared", false)];
    let reader = super::create_start(cri, pod, cfg, c).await;
    super::wait_state(cri, &reader, cri::ContainerState::ContainerRunning).await;
    let (code, out, err) = sh(cri, &reader, "cat /shared/f").await;
    assert_eq!((code, out.as_str()), (0, "shared\n"), "{err}");
    cri.rt
        .stop_container(cri::StopContainerRequest {
            container_id: reader.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer reader");
    super::remove_and_check_gone(cri, &reader, "reader").await;
}
