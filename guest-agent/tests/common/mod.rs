//! Test harness: runs the real agent binary in its own mount/pid/uts/ipc/net namespaces
//! (`unshare`), listening on a Unix socket in a temp dir, with a private cgroup parent.
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agent_proto::pb;
use agent_proto::AgentClient;
use tokio_stream_compat::collect;

pub mod tokio_stream_compat {
    use agent_proto::pb;
    /// Collects a stdout/stderr stream into bytes.
    pub async fn collect(mut s: tonic::Streaming<pb::OutputChunk>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(Some(c)) = s.message().await {
            out.extend_from_slice(&c.data);
        }
        out
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running agent in its own namespaces.
pub struct TestAgent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub rootfs: PathBuf,
    pub etc: PathBuf,
    pub cgroup_root: PathBuf,
}

/// Builds a busybox root filesystem (Debian busybox-static) under `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "tmp", "etc", "sys", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (guest-agent/apt-packages)");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    let list = Command::new(bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/image-file"), "from-the-image\n").unwrap();
    root
}

impl TestAgent {
    /// Starts the agent (host mode) and waits until it answers Health.
    pub async fn start() -> (TestAgent, AgentClient) {
        Self::start_mode(false).await
    }

    /// Starts the agent; `guest` runs it with PID 1 duties (it is PID 1 of its namespace),
    /// logging to `agent.log` as its console and writing the ready byte into `port`.
    pub async fn start_mode(guest: bool) -> (TestAgent, AgentClient) {
        let mut agent = Self::spawn(guest, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if agent.sock.exists() {
                if let Ok(mut c) = agent_proto::client::connect_unix(&agent.sock).await {
                    if c.health(pb::Empty {}).await.is_ok() {
                        return (agent, c);
                    }
                }
            }
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!("agent exited early ({st}): {}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not come up: {}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawns the agent without waiting for it; `listen` overrides the Unix socket.
    pub fn spawn(guest: bool, listen: Option<String>) -> TestAgent {
        let dir = tempfile::Builder::new()
            .prefix("kennel-agent-test")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("agent.sock");
        let etc = dir.path().join("etc");
        let rootfs = busybox_rootfs(dir.path());
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let cgroup_root = PathBuf::from(format!(
            "/sys/fs/cgroup/kennel-test-{}-{n}",
            std::process::id()
        ));
        let log_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // Stands in for /dev/mem (which the agent opens without creating): a sparse file
        // covering the VMM's marker page at 0xd0000000.
        std::fs::File::create(dir.path().join("port"))
            .unwrap()
            .set_len(0xd000_1000)
            .unwrap();
        let mode: Vec<std::ffi::OsString> = if guest {
            vec![
                "--mode".into(),
                "guest".into(),
                "--console".into(),
                log_path.clone().into(),
                "--ready-marker".into(),
                dir.path().join("port").into(),
            ]
        } else {
            vec!["--mode".into(), "host".into()]
        };
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--uts",
                "--ipc",
                "--net",
            ])
            .arg(env!("CARGO_BIN_EXE_kennel-agent"))
            .args(&mode)
            .arg("--listen")
            .arg(listen.unwrap_or_else(|| format!("unix:{}", sock.display())))
            .arg("--cgroup-root")
            .arg(&cgroup_root)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--etc-dir")
            .arg(&etc)
            .arg("--sys-block-dir")
            .arg(dir.path().join("sysblock"))
            .env("KENNEL_AGENT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux) runs");
        TestAgent {
            child,
            dir,
            sock,
            rootfs,
            etc,
            cgroup_root,
        }
    }

    /// Host PID of the agent (the child `unshare` forked), for nsenter.
    pub fn agent_pid(&self) -> u32 {
        let id = self.child.id();
        let kids = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap();
        kids.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Runs a command in the agent's network namespace and returns its stdout.
    pub fn in_netns(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.agent_pid().to_string())
            .arg("-n")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// True while the agent process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits for the agent process to exit (after DestroySandbox).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The PID namespace is gone with the agent; remove the cgroups it left.
        let name = self.cgroup_root.file_name().unwrap().to_owned();
        let parents: Vec<PathBuf> = if self
            .cgroup_root
            .parent()
            .unwrap()
            .join("cgroup.controllers")
            .exists()
        {
            vec![self.cgroup_root.clone()]
        } else {
            // v1 controllers, and the unified hierarchy a guest-mode agent mounts itself.
            ["memory", "cpu", "cpuacct", "pids", "unified"]
                .iter()
                .map(|c| Path::new("/sys/fs/cgroup").join(c).join(&name))
                .collect()
        };
        for p in parents {
            for _ in 0..100 {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    for e in rd.flatten() {
                        if e.path().is_dir() {
                            let _ = std::fs::remove_dir(e.path());
                        }
                    }
                }
                if std::fs::remove_dir(&p).is_ok() || !p.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// An OCI runtime spec for a busybox container running `args`.
pub fn spec(args: &[&str], memory_limit: Option<i64>) -> Vec<u8> {
    let mut s = serde_json::json!({
        "ociVersion": "1.0.2",
        "hostname": "ctr",
        "process": {
            "args": args,
            "env": ["PATH=/bin", "HOME=/"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0}
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ],
        "linux": {"resources": {"pids": {"limit": 128}}}
    });
    if let Some(m) = memory_limit {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": m});
    }
    serde_json::to_vec(&s).unwrap()
}

/// An OCI process for ExecProcess.
pub fn process(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "args": args,
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0}
    }))
    .unwrap()
}

/// CreateContainer request using the test rootfs as the overlay's lower dir.
pub fn create_req(agent: &TestAgent, id: &str, spec: Vec<u8>) -> pb::CreateContainerRequest {
    pb::CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec,
        rootfs: Some(pb::Rootfs {
            lower_dirs: vec![agent.rootfs.display().to_string()],
            readonly: false,
        }),
        tty: false,
    }
}

pub fn preq(id: &str, exec_id: &str) -> pb::ProcessRequest {
    pb::ProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
    }
}

/// Starts reading stdout of a process in the background.
pub async fn stdout_of(
    c: &mut AgentClient,
    id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let s = c.read_stdout(preq(id, exec_id)).await.unwrap().into_inner();
    tokio::spawn(collect(s))
}

/// Starts reading stderr of a process in the background.
pub async fn stderr_of(
    c: &mut AgentClient,
    id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let s = c.read_stderr(preq(id, exec_id)).await.unwrap().into_inner();
    tokio::spawn(collect(s))
}
