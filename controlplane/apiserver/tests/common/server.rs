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
        let api = kennel_apiserver::start(ApiServerConfig {
            store,
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
