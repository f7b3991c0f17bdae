//! kennel-ingress: the built-in Ingress controller. A reverse proxy on the node that routes
//! HTTP and HTTPS requests by host and path, per the Ingresses of class `kennel`, straight to
//! the ready endpoints of the backend Services (not via the ClusterIP).
//!
//! - [`paths`]: host and path matching (pure).
//! - [`class`]: which Ingresses are ours; the IngressClass addon object.
//! - [`backends`]: backend → Service port → EndpointSlice endpoints (pure).
//! - [`table`]: the immutable routing table (pure).
//! - [`tls`]: certificates from Secrets, chosen by SNI; the default certificate.
//! - `forward`, `server`: the hyper proxy and the listeners.
//! - `watch`: reflectors, debounced rebuilds, atomic swaps.
//! - [`status`]: `status.loadBalancer.ingress` = the node IPs.
//!
//! Start it with [`run`] (until dropped) or [`spawn`] (a handle that reports every rebuild).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use k8s_openapi::api::networking::v1::IngressClass;
use tokio::sync::watch as signal;

pub mod backends;
pub mod class;
mod forward;
pub mod paths;
mod server;
pub mod status;
pub mod table;
pub mod tls;
mod watch;

pub use forward::{strip_hop_by_hop, upgrade_protocol};

/// The IngressClass this controller serves.
pub const DEFAULT_CLASS: &str = "kennel";
/// The `spec.controller` of that class.
pub const DEFAULT_CONTROLLER: &str = "kennel.dev/ingress";

/// How the controller runs on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// Plain HTTP listener (default `0.0.0.0:80`; port 0 picks one; None: no HTTP).
    pub http_listen: Option<SocketAddr>,
    /// TLS listener (default `0.0.0.0:443`; None: no HTTPS).
    pub https_listen: Option<SocketAddr>,
    /// IngressClass name served (default [`DEFAULT_CLASS`]).
    pub class_name: String,
    /// Controller name of that class (default [`DEFAULT_CONTROLLER`]).
    pub controller: String,
    /// Written to `status.loadBalancer.ingress` of every served Ingress (empty: status untouched).
    pub node_ips: Vec<IpAddr>,
    /// Changes arriving within this window after the first are one rebuild (default 50 ms).
    pub debounce: Duration,
    /// Connecting to an endpoint longer than this is a 502 (default 5 s).
    pub connect_timeout: Duration,
    /// Offer HTTP/2 by ALPN on the TLS listener (default true).
    pub http2: bool,
}

impl IngressConfig {
    /// Defaults: ports 80 and 443 on every address, class `kennel`, status = `node_ips`.
    pub fn new(node_ips: Vec<IpAddr>) -> Self {
        IngressConfig {
            http_listen: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            https_listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            class_name: DEFAULT_CLASS.to_string(),
            controller: DEFAULT_CONTROLLER.to_string(),
            node_ips,
            debounce: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            http2: true,
        }
    }
}

/// The IngressClass object of `cfg` (default class, annotation
/// `ingressclass.kubernetes.io/is-default-class: "true"`), for `kennel up` to create.
pub fn ingress_class(cfg: &IngressConfig) -> IngressClass {
    class::ingress_class(&cfg.class_name, &cfg.controller)
}

/// The controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A listen address could not be bound.
    #[error("bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The default certificate or the TLS configuration could not be made.
    #[error("TLS setup")]
    Tls(#[from] tls::TlsError),
}

/// What the last rebuild produced (published after each one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Number of rebuilds so far (0: the first lists are not in yet; every request gets 404).
    pub generation: u64,
    /// Ingresses served.
    pub ingresses: usize,
    /// Path rules in the table.
    pub rules: usize,
    /// Distinct backends.
    pub backends: usize,
    /// Hosts with a certificate.
    pub certificates: usize,
    /// Rules, backends and certificates that could not be used, each naming its object.
    pub warnings: Vec<String>,
    /// Status writes that failed (retried).
    pub status_errors: usize,
}

/// An error and its sources, `: `-joined.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A running controller; dropping it stops the listeners, their connections and the watches.
pub struct RunningIngress {
    /// The bound HTTP address.
    pub http_addr: Option<SocketAddr>,
    /// The bound HTTPS address.
    pub https_addr: Option<SocketAddr>,
    status: signal::Receiver<SyncStatus>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _stop: signal::Sender<()>,
}

impl RunningIngress {
    /// Every rebuild's outcome.
    pub fn status(&self) -> signal::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Waits for the first rebuild (all lists in).
    pub async fn ready(&self) -> SyncStatus {
        self.wait_synced_after(0).await
    }

    /// Waits for a rebuild with generation greater than `after`.
    pub async fn wait_synced_after(&self, after: u64) -> SyncStatus {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| s.generation > after)
            .await
            .map(|s| s.clone());
        s.unwrap_or_default()
    }
}

impl Drop for RunningIngress {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, IngressError> {
    let err = |source| IngressError::Bind { addr, source };
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(1024).map_err(err)
}

/// Binds the listeners and starts serving (on the current tokio runtime). Requests get 404
/// until the first lists are in ([`RunningIngress::ready`]).
pub fn spawn(cfg: IngressConfig, client: kube::Client) -> Result<RunningIngress, IngressError> {
    let http = cfg.http_listen.map(bind).transpose()?;
    let https = cfg.https_listen.map(bind).transpose()?;
    let local = |l: &Option<tokio::net::TcpListener>, addr: Option<SocketAddr>| match (l, addr) {
        (Some(l), Some(addr)) => l
            .local_addr()
            .map(Some)
            .map_err(|source| IngressError::Bind { addr, source }),
        _ => Ok(None),
    };
    let http_addr = local(&http, cfg.http_listen)?;
    let https_addr = local(&https, cfg.https_listen)?;

    let resolver = Arc::new(tls::SniResolver::new(tls::default_certificate()?));
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone(), cfg.http2)?));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    let upstream = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let (stop_tx, stop_rx) = signal::channel(());
    let proxy = Arc::new(forward::Proxy {
        table: ArcSwap::from_pointee(table::RouteTable::default()),
        client: upstream,
        stop: stop_rx,
    });
    let (status_tx, status) = signal::channel(SyncStatus::default());
    let mut tasks = Vec::new();
    if let Some(l) = http {
        tasks.push(tokio::spawn(server::http(l, proxy.clone())));
    }
    if let Some(l) = https {
        tasks.push(tokio::spawn(server::https(l, acceptor, proxy.clone())));
    }
    tasks.push(tokio::spawn(watch::run(
        cfg, client, proxy, resolver, status_tx,
    )));
    tracing::info!(?http_addr, ?https_addr, "ingress controller listening");
    Ok(RunningIngress {
        http_addr,
        https_addr,
        status,
        tasks,
        _stop: stop_tx,
    })
}

/// Serves until the future is dropped.
pub async fn run(cfg: IngressConfig, client: kube::Client) -> Result<(), IngressError> {
    let _running = spawn(cfg, client)?;
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn defaults_and_addon() {
        let cfg = super::IngressConfig::new(vec!["192.0.2.1".parse().unwrap()]);
        assert_eq!(cfg.http_listen.unwrap().port(), 80);
        assert_eq!(cfg.https_listen.unwrap().port(), 443);
        let c = super::ingress_class(&cfg);
        assert_eq!(c.metadata.name.as_deref(), Some("kennel"));
    }
}
