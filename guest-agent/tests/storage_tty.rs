//! Host integration tests (root): MountStorage of a real ext4 disk (a loop device standing
//! in for the virtio-blk image disk, found by its serial) used as the container's overlay
//! lower dir; a container with a terminal.

mod common;

use std::process::Command;
use std::time::Duration;

use agent_proto::pb;
use common::*;
use tonic::Code;

/// A loop device over an ext4 image made from `src`; detached on drop.
struct LoopDisk {
    dev: String,
}

impl LoopDisk {
    fn new(image: &std::path::Path, src: &std::path::Path) -> LoopDisk {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(32 << 20).unwrap();
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(src)
            .arg(image)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) runs");
        assert!(st.success());
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .expect("losetup runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDisk {
            dev: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_disk_found_by_serial_is_the_container_rootfs() {
    let (agent, mut c) = TestAgent::start().await;
    std::fs::write(agent.rootfs.join("etc/image-file"), "from-the-disk\n").unwrap();
    let disk = LoopDisk::new(&agent.dir.path().join("image.ext4"), &agent.rootfs);
    // The agent looks disks up in its --sys-block-dir: give the loop device a serial there.
    let name = disk.dev.trim_start_matches("/dev/");
    let sysdir = agent.dir.path().join("sysblock").join(name);
    std::fs::create_dir_all(&sysdir).unwrap();
    std::fs::write(sysdir.join("serial"), "kennel-img-1\n").unwrap();

    let mnt = agent.dir.path().join("images/img-1");
    let r = c
        .mount_storage(pb::MountStorageRequest {
            serial: "kennel-img-1".into(),
            mount_point: mnt.display().to_string(),
            fstype: "ext4".into(),
            readonly: true,
            options: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.device, disk.dev);

    let mut req = create_req(
        &agent,
        "disk",
        spec(
            &[
                "sh",
                "-c",
                "cat /etc/image-file; echo w > /etc/x && cat /etc/x",
            ],
            None,
        ),
    );
    req.rootfs = Some(pb::Rootfs {
        lower_dirs: vec![mnt.display().to_string()],
        readonly: false,
    });
    c.create_container(req).await.unwrap();
    let out = stdout_of(&mut c, "disk", "").await;
    c.start_container(pb::ContainerRequest {
        container_id: "disk".into(),
    })
    .await
    .unwrap();
    let w = c.wait_process(preq("disk", "")).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 0, "log: {}", agent.log());
    assert_eq!(out.await.unwrap(), b"from-the-disk\nw\n");
    c.remove_container(pb::RemoveContainerRequest {
        container_id: "disk".into(),
    })
    .await
    .unwrap();

    let e = c
        .mount_storage(pb::MountStorageRequest {
            serial: "kennel-img-1".into(),
            mount_point: "relative/path".into(),
            fstype: "ext4".into(),
            readonly: true,
            options: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("mount_point"), "{e:?}");
    // Unknown serials are waited for (hot-attach), then NotFound.
    let e = c
        .mount_storage(pb::MountStorageRequest {
            serial: "no-such-disk".into(),
            mount_point: "/x".into(),
            fstype: "ext4".into(),
            readonly: true,
            options: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Unmounts with the agent's mount namespace when the agent goes.
    drop(c);
    drop(agent);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_container() {
    let (agent, mut c) = TestAgent::start().await;
    let mut req = create_req(
        &agent,
        "t",
        spec(
            &[
                "sh",
                "-c",
                "test -t 0 && echo is-a-tty; read line; echo got-$line; stty size",
            ],
            None,
        ),
    );
    req.tty = true;
    c.create_container(req).await.unwrap();
    let out = stdout_of(&mut c, "t", "").await;
    c.start_container(pb::ContainerRequest {
        container_id: "t".into(),
    })
    .await
    .unwrap();
    c.resize_tty(pb::ResizeTtyRequest {
        container_id: "t".into(),
        exec_id: String::new(),
        rows: 40,
        cols: 100,
    })
    .await
    .unwrap();
    c.write_stdin(pb::WriteStdinRequest {
        container_id: "t".into(),
        exec_id: String::new(),
        data: b"abc\n".to_vec(),
    })
    .await
    .unwrap();
    let w = tokio::time::timeout(Duration::from_secs(60), c.wait_process(preq("t", "")))
        .await
        .expect("tty container exits")
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 0);
    let text = String::from_utf8_lossy(&out.await.unwrap()).replace('\r', "");
    assert!(text.contains("is-a-tty\n"), "{text:?}");
    assert!(text.contains("got-abc\n"), "{text:?}");
    assert!(text.contains("40 100\n"), "{text:?}");
    let e = c
        .resize_tty(pb::ResizeTtyRequest {
            container_id: "t".into(),
            exec_id: "nope".into(),
            rows: 1,
            cols: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_mode_mounts_marks_ready_and_reboots() {
    // PID 1 of its own PID and mount namespaces: the agent mounts /proc, /sys, /dev, ...,
    // cgroup2, writes the ready byte, and DestroySandbox ends with reboot(2), which the
    // kernel turns into the end of the namespace.
    let (mut agent, mut c) = TestAgent::start_mode(true).await;
    // The marker file stands in for /dev/mem: one byte, value 2, at the VMM's marker address.
    let marker = std::fs::File::open(agent.dir.path().join("port")).unwrap();
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&marker, &mut byte, 0xd000_0000).unwrap();
    assert_eq!(byte[0], 2);
    // No limits: on a hybrid-cgroup host the freshly mounted cgroup2 has no controllers.
    let mut s: serde_json::Value = serde_json::from_slice(&spec(
        &["sh", "-c", "echo in-guest-mode; ls /dev/null"],
        None,
    ))
    .unwrap();
    s["linux"] = serde_json::json!({});
    c.create_container(create_req(&agent, "g", serde_json::to_vec(&s).unwrap()))
        .await
        .unwrap();
    let out = stdout_of(&mut c, "g", "").await;
    c.start_container(pb::ContainerRequest {
        container_id: "g".into(),
    })
    .await
    .unwrap();
    let w = c.wait_process(preq("g", "")).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 0, "{}", agent.log());
    assert_eq!(out.await.unwrap(), b"in-guest-mode\n/dev/null\n");
    c.destroy_sandbox(pb::Empty {}).await.unwrap();
    let st = agent
        .wait_exit(Duration::from_secs(60))
        .expect("agent ends after DestroySandbox");
    assert!(!st.success(), "ended by reboot, not a clean exit: {st}");
    let log = agent.log();
    assert!(log.contains("listening on unix:"), "{log}");
    assert!(!log.contains("reboot failed"), "{log}");
}
