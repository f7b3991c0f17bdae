//! Test fixtures: the real API server in-process (TLS + token, SQLite in a temp dir), the
//! controller manager running against it, and a tiny stand-in kubelet.
#![allow(dead_code)]

pub mod kubelet;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use kennel_apiserver::testing::TestApiServer;
use kennel_apiserver::RunningApiServer;
use kennel_controllers::{ControllerConfig, ControllerError};
use kube::Client;

/// API server, controller manager and stand-in kubelet for one test.
pub struct Cluster {
    /// The API server.
    pub api: RunningApiServer,
    /// Its data dir.
    pub dir: tempfile::TempDir,
    /// An admin client.
    pub client: Client,
    controllers: tokio::task::JoinHandle<Result<(), ControllerError>>,
    kubelet: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controllers.abort();
        self.kubelet.abort();
    }
}

/// An admin client from `kubeconfig`.
pub async fn client_for(kubeconfig: &std::path::Path) -> Client {
    kennel_apiserver::testing::client_from(kubeconfig).await
}

impl Cluster {
    /// Starts everything (leader election on, as `kennel up` would run it).
    pub async fn start() -> Self {
        let TestApiServer { api, dir, client } = TestApiServer::start().await;
        let controllers = tokio::spawn(kennel_controllers::run(
            ControllerConfig {
                identity: "test-controller-manager".into(),
                leader_elect: true,
                root_ca_pem: Some(api.ca_pem.clone()),
            },
            client.clone(),
        ));
        let kubelet = tokio::spawn(kubelet::run(client.clone()));
        Self {
            api,
            dir,
            client,
            controllers,
            kubelet,
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real kubectl (on PATH, resolved through its symlink).
pub fn kubectl_bin() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("run sh");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(p.exists(), "kubectl is not on PATH");
    p
}

/// The real kubectl against one cluster, with its own discovery cache.
pub struct K {
    /// The cluster's admin kubeconfig.
    pub kubeconfig: std::path::PathBuf,
    /// kubectl's cache directory.
    pub cache: tempfile::TempDir,
}

impl K {
    /// Runs kubectl, which must succeed; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = kubectl(&self.kubeconfig, self.cache.path(), args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs kubectl against `kubeconfig`.
pub async fn kubectl(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[&str],
) -> Output {
    let mut c = Command::new(kubectl_bin());
    // Global flags first, so arguments after a `--` (a container command) stay intact.
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args);
    tokio::task::spawn_blocking(move || c.output().expect("run kubectl"))
        .await
        .expect("join")
}
