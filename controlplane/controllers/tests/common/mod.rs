//! Test fixtures: the real API server in-process (TLS + token, SQLite in a temp dir), the
//! controller manager running against it, and a tiny stand-in kubelet.
#![allow(dead_code)]

pub mod kubelet;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use kennel_apiserver::{ApiServerConfig, RunningApiServer, StoreConfig};
use kennel_controllers::{ControllerConfig, ControllerError};
use kube::config::{KubeConfigOptions, Kubeconfig};
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
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

impl Cluster {
    /// Starts everything (leader election on, as `kennel up` would run it).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = kennel_apiserver::start(ApiServerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            store: StoreConfig::Sqlite,
            tls: true,
            auth: true,
            token_file: None,
        })
        .await
        .expect("start API server");
        let client = client_for(&api.kubeconfig).await;
        let controllers = tokio::spawn(kennel_controllers::run(
            ControllerConfig {
                identity: "test-controller-manager".into(),
                leader_elect: true,
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

/// Runs kubectl against `kubeconfig`.
pub async fn kubectl(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[&str],
) -> Output {
    let mut c = Command::new(kubectl_bin());
    c.args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache);
    tokio::task::spawn_blocking(move || c.output().expect("run kubectl"))
        .await
        .expect("join")
}
