//! Test fixture (feature `testing`): the real API server in-process — TLS, token auth, SQLite
//! in a temporary directory — and admin kube clients for it. Shared by the other crates' tests
//! and benchmarks so each does not grow its own copy.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::{ApiServerConfig, RunningApiServer};

/// One API server for a test: dropped with the test, its data directory with it.
pub struct TestApiServer {
    /// The running server (URL, CA, admin kubeconfig path).
    pub api: RunningApiServer,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// An admin client.
    pub client: Client,
}

impl TestApiServer {
    /// Starts the API server on a free loopback port. No controller manager runs beside it, so
    /// ServiceAccount admission (which needs each namespace's `default` ServiceAccount) is off.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the API server");
        let api = crate::start(ApiServerConfig {
            disable_admission_plugins: vec!["ServiceAccount".into()],
            ..ApiServerConfig::new(dir.path())
        })
        .await
        .expect("start the API server");
        let client = admin_client(&api).await;
        Self { api, dir, client }
    }

    /// A fresh admin client with its own connection pool.
    pub async fn client(&self) -> Client {
        admin_client(&self.api).await
    }
}

/// An admin client for `api`, from the kubeconfig it wrote.
pub async fn admin_client(api: &RunningApiServer) -> Client {
    client_from(&api.kubeconfig).await
}

/// A client from the kubeconfig file at `path`.
pub async fn client_from(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}
