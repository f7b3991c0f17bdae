//! Starts Debian's `/usr/bin/etcd` on free loopback ports with a temporary data directory.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd, killed on drop.
pub struct EtcdServer {
    child: Child,
    /// Client URL, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("/usr/bin/etcd")
            .args([
                "--name",
                "test",
                "--data-dir",
                dir.path().join("data").to_str().unwrap(),
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("test={peer_url}"),
                "--log-level",
                "error",
                "--unsafe-no-fsync",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/bin/etcd (Debian package etcd-server)");
        let server = Self {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([&server.endpoint], None).await {
                if c.get("/health-probe", None).await.is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
