//! kennel-dns: the cluster DNS server. Services and EndpointSlices (watched with kube-rs) become
//! records per the Kubernetes DNS specification (schema 1.1.0), served over UDP and TCP from an
//! in-memory index ([`index`]); other names go to the node's resolvers ([`forward`]). The wire
//! format is hickory-proto's.
//!
//! `kennel up` runs it on the pod network's gateway, behind the `kube-system/kube-dns` Service
//! whose ClusterIP pods get as their nameserver.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
pub mod forward;
pub mod index;
mod server;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::watch as signal;

/// How the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Addresses served over UDP and TCP (port 0 picks one; bound with `IP_FREEBIND`).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Resolvers for names outside the domain (none: SERVFAIL at once).
    pub upstreams: Vec<SocketAddr>,
    /// TTL of every answer, seconds.
    pub ttl: u32,
}

impl DnsConfig {
    /// `cluster.local` on `listen`, TTL 5 s, no upstreams.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        Self {
            listen,
            domain: "cluster.local".into(),
            upstreams: Vec::new(),
            ttl: 5,
        }
    }
}

/// The nameservers of a resolv.conf, as upstreams (port 53).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen address could not be bound.
    #[error("bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// What the listeners and the watch share.
pub(crate) struct Shared {
    pub(crate) domain: String,
    pub(crate) upstreams: Vec<SocketAddr>,
    pub(crate) ttl: u32,
    pub(crate) index: RwLock<Option<Arc<index::Index>>>,
    pub(crate) ready: signal::Sender<bool>,
}

/// A running server; dropping it stops it.
pub struct RunningDns {
    /// The bound addresses (UDP and TCP share each).
    pub addrs: Vec<SocketAddr>,
    ready: signal::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningDns {
    /// Waits until the first lists are in (queries in the domain get SERVFAIL before).
    pub async fn ready(&self) {
        let _ = self.ready.clone().wait_for(|r| *r).await;
    }
}

impl Drop for RunningDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds every listen address and starts serving.
pub async fn serve(cfg: DnsConfig, client: kube::Client) -> Result<RunningDns, DnsError> {
    let (ready_tx, ready) = signal::channel(false);
    let shared = Arc::new(Shared {
        domain: index::absolute(&cfg.domain),
        upstreams: cfg.upstreams.clone(),
        ttl: cfg.ttl,
        index: RwLock::new(None),
        ready: ready_tx,
    });
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for addr in &cfg.listen {
        let udp = server::bind_udp(*addr).map_err(|source| DnsError::Bind {
            addr: *addr,
            source,
        })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: *addr,
            source,
        })?;
        let tcp = server::bind_tcp(bound).map_err(|source| DnsError::Bind {
            addr: bound,
            source,
        })?;
        tasks.push(tokio::spawn(server::udp(udp, shared.clone())));
        tasks.push(tokio::spawn(server::tcp(tcp, shared.clone())));
        addrs.push(bound);
    }
    tasks.push(tokio::spawn(watch::run(client, shared)));
    Ok(RunningDns {
        addrs,
        ready,
        tasks,
    })
}

/// Serves until the future is dropped.
pub async fn run(cfg: DnsConfig, client: kube::Client) -> Result<(), DnsError> {
    let _running = serve(cfg, client).await?;
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf_nameservers() {
        let text = "# x\nsearch example.com\nnameserver 10.0.0.2\nnameserver  ::1\nnameserver bad\noptions ndots:5\n";
        assert_eq!(
            super::upstreams_from_resolv_conf(text),
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
