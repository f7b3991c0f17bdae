//! Builds a running API server from plain config, in a documented order: open the store, start
//! compaction, create bootstrap objects, load or generate credentials (and the client for node
//! agents), bind, write the admin kubeconfig, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::handlers::KubeletClient;
use crate::services::{self, ServiceNetwork};
use crate::{pki, ApiState};
use kennel_store::{spawn_compactor, CompactionPolicy, EtcdStore, SqliteStore, Store, StoreError};

/// Errors while starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Credentials could not be created.
    #[error("pki: {0}")]
    Pki(#[from] pki::PkiError),
    /// Authentication could not be set up (e.g. a malformed token file).
    #[error("authentication: {0}")]
    Authn(#[from] crate::auth::authn::AuthnError),
    /// An admission plugin named to disable is not one this server has.
    #[error("unknown admission plugin {0:?} (known: ServiceAccount)")]
    AdmissionPlugin(String),
    /// The audit log or policy could not be opened.
    #[error("audit: {0}")]
    Audit(#[from] crate::auth::audit::AuditError),
    /// The token file could not be read.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Binding the listen address failed.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Which store backs the server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum StoreConfig {
    /// SQLite file in the data directory (the default).
    Sqlite,
    /// etcd at these endpoints, keys under `/kennel`.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
    },
}

/// API server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiServerConfig {
    /// State directory (database, pki, kubeconfig).
    pub data_dir: PathBuf,
    /// Listen address (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Backend.
    pub store: StoreConfig,
    /// Serve HTTPS with the generated certificate (default true).
    #[serde(default = "yes")]
    pub tls: bool,
    /// Require a bearer token (default true).
    #[serde(default = "yes")]
    pub auth: bool,
    /// Extra bearer tokens, Kubernetes static token file format (`token,user[,uid,"groups"]`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// ClusterIP and NodePort ranges and the DNS Service's address.
    #[serde(default)]
    pub service_network: ServiceNetwork,
    /// How long Events are kept after they were last seen, in seconds (upstream's
    /// `--event-ttl`, 1 h by default).
    #[serde(default = "default_event_ttl")]
    pub event_ttl_secs: u64,
    /// Audit log file (JSON lines), upstream's `--audit-log-path`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Audit policy file, upstream's `--audit-policy-file` (Metadata for every request when unset).
    #[serde(default)]
    pub audit_policy: Option<PathBuf>,
    /// Admission plugins switched off, upstream's `--disable-admission-plugins` (only
    /// `ServiceAccount` can be: without a controller manager no namespace gets its `default`
    /// ServiceAccount, and that plugin refuses pods then, as upstream's does).
    #[serde(default)]
    pub disable_admission_plugins: Vec<String>,
}

fn default_event_ttl() -> u64 {
    crate::events_ttl::DEFAULT_TTL.as_secs()
}

impl ApiServerConfig {
    /// Defaults for a server keeping its state in `data_dir`: SQLite, HTTPS and token auth on
    /// a free loopback port, the default Service network.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ApiServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreConfig::Sqlite,
            tls: true,
            auth: true,
            token_file: None,
            service_network: ServiceNetwork::default(),
            event_ttl_secs: default_event_ttl(),
            audit_log: None,
            audit_policy: None,
            disable_admission_plugins: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A running API server; stops when dropped.
pub struct RunningApiServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Base URL (`https://127.0.0.1:PORT`).
    pub url: String,
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The admin bearer token.
    pub token: String,
    /// CA certificate PEM (empty without TLS).
    pub ca_pem: String,
    /// The store in use.
    pub store: Arc<dyn Store>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningApiServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens the configured store.
pub async fn open_store(cfg: &ApiServerConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &cfg.store {
        StoreConfig::Sqlite => Arc::new(SqliteStore::open(&cfg.data_dir)?),
        StoreConfig::Etcd { endpoints } => {
            Arc::new(EtcdStore::connect(endpoints, "/kennel").await?)
        }
    })
}

/// Serves the custom resources of every stored CRD.
async fn serve_stored_crds(store: &dyn Store) -> Result<(), StoreError> {
    let def = crate::registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRDs registered");
    for kv in store.list(&def.key_prefix(), 0, None).await?.items {
        match serde_json::from_slice::<serde_json::Value>(&kv.value) {
            Ok(crd) => crate::crd::register(&crd),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "a stored CRD does not decode"),
        }
    }
    Ok(())
}

/// Issuer (`iss`) of the ServiceAccount tokens this server signs (upstream's default
/// `--service-account-issuer` of kubeadm clusters).
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Starts the API server on the current tokio runtime.
pub async fn start(cfg: ApiServerConfig) -> Result<RunningApiServer, ApiServerError> {
    if let Some(p) = cfg
        .disable_admission_plugins
        .iter()
        .find(|p| *p != crate::admission::serviceaccount::PLUGIN_NAME)
    {
        return Err(ApiServerError::AdmissionPlugin(p.clone()));
    }
    let store = open_store(&cfg).await?;
    let compactor = spawn_compactor(store.clone(), CompactionPolicy::default());
    let net = Arc::new(cfg.service_network.clone());
    let mut state = ApiState {
        store: store.clone(),
        kubelet: None,
        services: net.clone(),
        authn: None,
        authz: None,
        audit: None,
        disabled_admission: Arc::new(cfg.disable_admission_plugins.clone()),
    };
    crate::bootstrap(&state).await?;
    serve_stored_crds(store.as_ref()).await?;
    services::repair::repair_once(store.as_ref(), &net).await?;
    let repair = tokio::spawn(services::repair::run(store.clone(), net));
    let events = crate::events_ttl::spawn(
        store.clone(),
        std::time::Duration::from_secs(cfg.event_ttl_secs.max(1)),
    );
    let pki = pki::ensure_pki(&cfg.data_dir, &[])?;
    state.kubelet = Some(Arc::new(KubeletClient::new(
        &pki.ca_pem,
        pki.kubelet_client_token.clone(),
    )?));
    if cfg.auth {
        // The admin token stays valid next to the admin's client certificate.
        let mut tokens = format!(
            "{},{},{},\"{}\"\n",
            pki.admin_token,
            pki::client::ADMIN.user,
            pki::client::ADMIN.user,
            crate::auth::user::MASTERS
        );
        if let Some(path) = &cfg.token_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ApiServerError::TokenFile {
                    path: path.clone(),
                    source,
                })?;
            tokens.push_str(&text);
        }
        state.authn = Some(Arc::new(crate::auth::authn::Authenticator::new(
            crate::auth::authn::AuthnConfig {
                store: store.clone(),
                pki_dir: pki::pki_dir(&cfg.data_dir),
                static_tokens: tokens,
                issuer: SA_ISSUER.to_string(),
            },
        )?));
        crate::auth::authz::reconcile_bootstrap_policy(store.as_ref()).await?;
        state.authz = Some(crate::auth::authz::Authorizer::start(store.clone()).await?);
    }
    if let Some(log) = &cfg.audit_log {
        state.audit = Some(Arc::new(crate::auth::audit::AuditLog::open(
            log,
            cfg.audit_policy.as_deref(),
        )?));
    }
    let tls = if cfg.tls {
        Some(pki.server_config()?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ApiServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = format!(
        "{}://{host}:{}",
        if cfg.tls { "https" } else { "http" },
        addr.port()
    );
    let kubeconfig = cfg.data_dir.join("admin.kubeconfig");
    let mut kc = if cfg.tls {
        let (cert, key) =
            pki::client::ensure_client_cert(&pki::pki_dir(&cfg.data_dir), &pki::client::ADMIN)?;
        pki::client::cert_kubeconfig(&url, &pki.ca_pem, pki::client::ADMIN.user, &cert, &key)
    } else {
        pki.kubeconfig(&url)
    };
    if !cfg.tls {
        kc = kc
            .lines()
            .filter(|l| !l.contains("certificate-authority-data"))
            .collect::<Vec<_>>()
            .join("\n");
        kc.push('\n');
    }
    pki::write_atomic(&kubeconfig, kc.as_bytes())?;
    let router = crate::router(state);
    let server = tokio::spawn(async move {
        if let Err(e) = crate::serve(listener, router, tls).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tracing::info!(%url, backend = store.backend(), kubeconfig = %kubeconfig.display(), "API server listening");
    Ok(RunningApiServer {
        addr,
        url,
        kubeconfig,
        token: pki.admin_token,
        ca_pem: if cfg.tls { pki.ca_pem } else { String::new() },
        store,
        tasks: vec![server, compactor, repair, events],
    })
}
