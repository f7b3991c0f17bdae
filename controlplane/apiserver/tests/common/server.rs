//! Starts the API server in-process on a free loopback port with a temporary data directory.

use kennel_apiserver::{ApiServerConfig, RunningApiServer, StoreConfig};

use super::etcd::EtcdServer;

/// Which store backs a test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the temp dir.
    Sqlite,
    /// A fresh etcd started for the test.
    Etcd,
}

/// An API server (and its etcd) for one test; everything stops on drop.
pub struct TestServer {
    /// The server.
    pub api: RunningApiServer,
    /// Temp data dir.
    pub dir: tempfile::TempDir,
    _etcd: Option<EtcdServer>,
}

impl TestServer {
    /// Starts a TLS + token server on `backend`.
    pub async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = match backend {
            Backend::Sqlite => None,
            Backend::Etcd => Some(EtcdServer::start().await),
        };
        let store = match &etcd {
            None => StoreConfig::Sqlite,
            Some(e) => StoreConfig::Etcd {
                endpoints: vec![e.endpoint.clone()],
            },
        };
        // No controller manager runs here to give namespaces their `default` ServiceAccount.
        let api = kennel_apiserver::start(ApiServerConfig {
            store,
            disable_admission_plugins: vec!["ServiceAccount".into()],
            ..ApiServerConfig::new(dir.path())
        })
        .await
        .expect("start API server");
        Self {
            api,
            dir,
            _etcd: etcd,
        }
    }
}

impl TestServer {
    /// A kube-rs client from the server's admin kubeconfig (TLS + token).
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.api.kubeconfig).expect("kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }
}

/// The real kubectl on PATH (1.32) and the oldest installed beside it (1.27).
pub fn kubectl_bins() -> Vec<std::path::PathBuf> {
    let on_path = std::process::Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("run sh");
    let kubectl = std::path::PathBuf::from(String::from_utf8_lossy(&on_path.stdout).trim());
    assert!(kubectl.exists(), "kubectl is not on PATH");
    let old = kubectl.parent().unwrap().join("kubectl.1.27");
    assert!(old.exists(), "{} is missing", old.display());
    vec![kubectl, old]
}
