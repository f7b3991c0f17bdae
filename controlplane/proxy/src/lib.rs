//! kennel-proxy: the service proxy. Services and EndpointSlices become
//! nftables rules in one table (family `ip`, IPv4 only), structured like
//! kube-proxy's nftables mode: verdict maps from service IP/port to a
//! per-service-port chain, `numgen` over per-endpoint DNAT chains, ClientIP
//! affinity in dynamic sets, rejects for services without endpoints.
//!
//! - [`model`]: Service/EndpointSlice → [`model::ServicePort`]s (pure).
//! - [`rules`]: the ruleset and its full or partial `nft` transaction (pure).
//! - [`apply`]: `nft -f` inside a network namespace.
//! - [`sync`]: watches, rate limiting, diffing against what was applied.
//! - [`lbstatus`]: `status.loadBalancer.ingress` = the node IPs.
//!
//! Start it with [`run`] (until dropped) or [`spawn`] (a handle that
//! reports every sync).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::Ipv4Addr;
use std::time::Duration;

pub use ipnet::Ipv4Net;
use tokio::sync::watch;

pub mod apply;
pub mod lbstatus;
pub mod model;
pub mod rules;
pub mod sync;

pub use sync::{SyncError, SyncStatus};

/// Default nftables table name.
pub const DEFAULT_TABLE: &str = "kennel-proxy";

/// The proxy failed to start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The sync loop stopped.
    #[error("service proxy")]
    Sync(#[from] SyncError),
}

/// How the proxy runs on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// Addresses NodePorts are served on; also the ingress of every
    /// `LoadBalancer` Service, which is served on them on its `port`.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod CIDR. Service traffic from outside it is masqueraded, and
    /// so is traffic from inside it to an endpoint inside it (the same
    /// bridge; see the README). None: masquerade all service traffic.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Named network namespace (`/run/netns/NAME`) to program; None: the
    /// current one.
    pub netns: Option<String>,
    /// nftables table (family `ip`), default [`DEFAULT_TABLE`].
    pub table: String,
    /// At most one sync per this period (default 1 s).
    pub min_sync_period: Duration,
    /// Replace the whole table at least this often (default 1 h; also
    /// after any failed sync). Full syncs forget ClientIP affinity.
    pub full_sync_period: Duration,
}

impl ProxyConfig {
    /// Defaults for node `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        ProxyConfig {
            node_name: node_name.into(),
            node_ips: Vec::new(),
            cluster_cidr: None,
            netns: None,
            table: DEFAULT_TABLE.to_string(),
            min_sync_period: Duration::from_secs(1),
            full_sync_period: Duration::from_secs(3600),
        }
    }
}

/// Runs the proxy until the future is dropped. The first sync replaces
/// whatever a previous run left in the table. The table stays when the
/// future is dropped (traffic keeps flowing while the proxy restarts); use
/// [`cleanup`] to remove it.
pub async fn run(cfg: ProxyConfig, client: kube::Client) -> Result<(), ProxyError> {
    let (tx, _rx) = watch::channel(SyncStatus::default());
    Ok(sync::run_with_status(cfg, client, tx).await?)
}

/// A running proxy; dropping it stops the proxy (the rules stay).
#[derive(Debug)]
pub struct Proxy {
    status: watch::Receiver<SyncStatus>,
    task: tokio::task::JoinHandle<Result<(), ProxyError>>,
}

/// Starts the proxy on the current tokio runtime.
pub fn spawn(cfg: ProxyConfig, client: kube::Client) -> Proxy {
    let (tx, status) = watch::channel(SyncStatus::default());
    let task = tokio::spawn(async move { Ok(sync::run_with_status(cfg, client, tx).await?) });
    Proxy { status, task }
}

impl Proxy {
    /// Every sync's outcome; `generation` counts successful syncs.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Waits for a successful sync with generation greater than `after`.
    pub async fn wait_synced_after(&self, after: u64) -> SyncStatus {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| s.generation > after)
            .await
            .map(|s| s.clone());
        s.unwrap_or_default()
    }

    /// True if the proxy task has stopped (it only stops on error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes the proxy's table (for `kennel down`).
pub fn cleanup(cfg: &ProxyConfig) -> Result<(), apply::ApplyError> {
    apply::Nft::for_netns(cfg.netns.as_deref()).delete_table(&cfg.table)
}
