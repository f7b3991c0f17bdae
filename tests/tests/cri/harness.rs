//! A real `kennel-cri` for tests and benches: its node network in a network namespace made
//! here, a loopback `docker-registry` holding busybox and kubia, a temp state dir, and CRI
//! clients over its Unix socket. Everything is stopped and removed on drop.
#![allow(dead_code)]

use hyper_util::rt::TokioIo;
use images::testing::{TestRegistry, TestRegistryOptions};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use kennel_tests::guest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// The runtime under test and its surroundings.
pub struct Cri {
    /// Temp dir (state, logs, socket).
    pub dir: tempfile::TempDir,
    /// Network namespace holding the node network and the VMMs.
    pub netns: String,
    /// Pod CIDR.
    pub pod_cidr: String,
    /// The registry, as `127.0.0.1:PORT`.
    pub registry_host: String,
    registry: TestRegistry,
    child: Option<Child>,
    /// RuntimeService client.
    pub rt: RuntimeServiceClient<Channel>,
    /// ImageService client.
    pub img: ImageServiceClient<Channel>,
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects a tonic channel to a Unix socket, waiting for it to appear.
pub async fn unix_channel(path: &Path, timeout: Duration) -> Channel {
    let deadline = Instant::now() + timeout;
    while tokio::net::UnixStream::connect(path).await.is_err() {
        assert!(Instant::now() < deadline, "{} never served", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = path.to_path_buf();
    // No CRI call of a test may hang CI: each has a deadline (tonic's per-request timeout).
    Endpoint::from_static("http://cri.invalid")
        .timeout(Duration::from_secs(240))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("CRI channel")
}

impl Cri {
    /// Starts everything; `tag` keeps names unique between test binaries running at once.
    pub async fn start(tag: &str) -> Self {
        let vmlinux = guest::vmlinux().expect("guest kernel");
        let agent = guest::agent().expect("static kennel-agent");
        let dir = tempfile::Builder::new()
            .prefix("kennel-cri-test")
            .tempdir()
            .unwrap();
        let n = std::process::id() % 200 + 20;
        let netns = format!("kcri-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &netns])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &netns]));
        sh(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
        let pod_cidr = format!("10.{}.{n}.0/24", if tag == "bench" { 215 } else { 214 });
        let registry = TestRegistry::start(TestRegistryOptions::default()).expect("registry");
        kennel_tests::registry::push_test_images(&registry).await;
        let registry_host = registry.host();
        let mut cri = Self {
            dir,
            netns,
            pod_cidr,
            registry_host,
            registry,
            child: None,
            // Replaced by spawn() below.
            rt: RuntimeServiceClient::new(Endpoint::from_static("http://x").connect_lazy()),
            img: ImageServiceClient::new(Endpoint::from_static("http://x").connect_lazy()),
        };
        cri.spawn(&vmlinux, &agent).await;
        cri
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A directory for pod logs.
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        self.dir.path().join("logs").join(pod)
    }

    async fn spawn(&mut self, vmlinux: &Path, agent: &Path) {
        let cache = guest::template_cache();
        let log = std::fs::File::create(self.dir.path().join("kennel-cri.log")).unwrap();
        let child = Command::new(guest::workspace_bin("kennel-cri"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--kernel")
            .arg(vmlinux)
            .arg("--agent")
            .arg(agent)
            .arg("--vmm")
            .arg(guest::workspace_bin("kennel-vmm"))
            .arg("--image-store")
            .arg(self.dir.path().join("images"))
            .arg("--template-cache")
            .arg(cache)
            .args(["--netns", &self.netns, "--pod-cidr", &self.pod_cidr])
            .args(["--bridge", "kcri0", "--plain-http", &self.registry_host])
            .args(["--log-level", "info,cri_shim=debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kennel-cri runs (build it with `cargo build -p cri-shim`)");
        self.child = Some(child);
        let ch = unix_channel(&self.socket(), Duration::from_secs(120)).await;
        self.rt = RuntimeServiceClient::new(ch.clone());
        self.img = ImageServiceClient::new(ch);
    }

    /// Stops kennel-cri (SIGTERM) and starts it again on the same state.
    pub async fn restart(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_file(self.socket());
        let vmlinux = guest::vmlinux().unwrap();
        let agent = guest::agent().unwrap();
        self.spawn(&vmlinux, &agent).await;
    }

    fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix_kill(c.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pulls `image` through the ImageService; panics with kennel-cri's log on failure.
    pub async fn pull(&mut self, image: &str) -> k8s_cri::v1::PullImageResponse {
        let req = k8s_cri::v1::PullImageRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self.img.pull_image(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => panic!("pull {image}: {e}\n{}", self.server_log()),
        }
    }

    /// The records of the sandboxes in the state directory, as JSON.
    fn sandbox_records(&self) -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(self.state_dir().join("sandboxes")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|data| serde_json::from_slice(&data).ok())
            .collect()
    }

    /// kennel-cri's log (for assertion messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kennel-cri.log")).unwrap_or_default()
    }

    /// What a failed wait prints: the tail of kennel-cri's log, and of every sandbox VM's guest
    /// console and VMM log (the agent logs to the console).
    pub fn diagnostics(&self) -> String {
        let mut out = format!(
            "--- kennel-cri log (tail) ---\n{}",
            tail(&self.server_log(), 60)
        );
        for v in self.sandbox_records() {
            let Some(console) = v["vmm"]["console"].as_str().map(PathBuf::from) else {
                continue;
            };
            let name = v["config"]["metadata"]["name"].as_str().unwrap_or("?");
            for f in [console.clone(), console.with_file_name("vmm.log")] {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                out.push_str(&format!(
                    "\n--- sandbox {name}: {} (tail) ---\n{}",
                    f.display(),
                    tail(&text, 40)
                ));
            }
        }
        out
    }

    /// HTTP GET from inside the node network namespace (curl); the body or the error.
    pub fn http_get(&self, url: &str) -> Result<String, String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--noproxy",
                "*",
                "-m",
                "10",
                url,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn nix_kill(pid: i32, sig: i32) -> i32 {
    // Through kill(1): this crate keeps unsafe out.
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.stop_server();
        // VMMs run in their own process groups and outlive kennel-cri by design: end the ones
        // this test's runtime left (a failed assertion skips the sandbox removal).
        for v in self.sandbox_records() {
            if let Some(pid) = v["vmm"]["pid"].as_i64() {
                nix_kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = &self.registry;
    }
}
