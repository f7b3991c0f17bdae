//! The node's pod network: setup, per-sandbox attach/detach, hostPorts and
//! reconcile. Each public operation runs in one worker thread that has
//! entered the node's network namespace.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, MacAddr, NodeNetConfig, TAP_PREFIX, VETH_PREFIX};
use crate::ipam::{IpamError, IpamState, IpamStore, LinkKind};
use crate::link::{LinkError, Netlink};
use crate::nat::{self, HostPortMapping, NatError};
use crate::ns::{NetNs, NsError};
use crate::sys;

/// Name of the pod's interface inside a pod network namespace (veth pods).
pub const POD_IFNAME: &str = "eth0";

/// Node network failures.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration or input.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The namespace could not be entered.
    #[error(transparent)]
    Ns(#[from] NsError),
    /// A netlink or tap operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Address management failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// nftables failed.
    #[error(transparent)]
    Nat(#[from] NatError),
    /// The pod CIDR overlaps a network already on the node (an address or
    /// a route of the main table).
    #[error("pod CIDR {cidr} overlaps {existing} on link {link}")]
    Overlap {
        /// Configured pod CIDR.
        cidr: Ipv4Net,
        /// Existing network.
        existing: Ipv4Net,
        /// Link carrying it.
        link: String,
    },
    /// Writing a sysctl failed.
    #[error("write sysctl {path}")]
    Sysctl {
        /// The /proc/sys path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox has no network on this node.
    #[error("sandbox {0} is not attached")]
    NotAttached(String),
    /// The host port is mapped to another sandbox (or differently).
    #[error("host port {protocol}/{host_port} is already mapped for sandbox {owner}")]
    HostPortInUse {
        /// Protocol.
        protocol: nat::Protocol,
        /// Port.
        host_port: u16,
        /// Sandbox holding it.
        owner: String,
    },
    /// The sandbox is attached with another kind of link.
    #[error("sandbox {id} is already attached with a {have:?} link")]
    KindMismatch {
        /// Sandbox id.
        id: String,
        /// Existing kind.
        have: LinkKind,
    },
}

/// A route the pod needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network (`0.0.0.0/0` for the default route).
    pub destination: Ipv4Net,
    /// Next hop; `None` for on-link.
    pub gateway: Option<Ipv4Addr>,
}

/// How the pod is plugged into the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodInterface {
    /// A persistent tap (`IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`, owner root) that
    /// the VMM opens by name; the guest NIC uses [`PodNetwork::mac`].
    Tap {
        /// Tap name on the node.
        name: String,
    },
    /// A veth pair into a pod network namespace.
    Veth {
        /// Host end, on the bridge.
        host: String,
        /// Pod end, inside the pod namespace (already configured).
        pod: String,
    },
}

/// Everything the pod (guest) needs to configure its network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// Sandbox id.
    pub sandbox_id: String,
    /// The link on the node.
    pub interface: PodInterface,
    /// The pod NIC's MAC: stable, locally administered, derived from the id.
    /// For taps this is the guest's virtio-net MAC; the tap itself keeps a
    /// different (kernel-chosen) address, as a bridge port must.
    pub mac: MacAddr,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod CIDR.
    pub prefix_len: u8,
    /// Gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Routes beyond the on-link pod CIDR.
    pub routes: Vec<Route>,
}

impl PodNetwork {
    /// The tap name, for tap-attached pods.
    pub fn tap_name(&self) -> Option<&str> {
        match &self.interface {
            PodInterface::Tap { name } => Some(name),
            PodInterface::Veth { .. } => None,
        }
    }

    /// The pod's address with the CIDR's prefix.
    pub fn address(&self) -> Ipv4Net {
        Ipv4Net::new(self.ip, self.prefix_len).unwrap_or_else(|_| Ipv4Net::from(self.ip))
    }

    /// The guest kernel's `ip=` argument for `device` (e.g. `eth0`):
    /// `ip=<ip>::<gateway>:<netmask>::<device>:off`.
    pub fn kernel_ip_arg(&self, device: &str) -> String {
        format!(
            "ip={}::{}:{}::{}:off",
            self.ip,
            self.gateway,
            self.address().netmask(),
            device
        )
    }
}

/// What [`NodeNetwork::reconcile`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Sandboxes whose address (and links, hostPorts) were released.
    pub released: Vec<String>,
    /// Leaked links deleted that belonged to no known sandbox.
    pub removed_links: Vec<String>,
    /// Taps of live sandboxes that were missing and have been made again.
    pub restored_links: Vec<String>,
}

/// The pod network of one node (one bridge in one network namespace).
#[derive(Debug)]
pub struct NodeNetwork {
    cfg: NodeNetConfig,
    gateway: Ipv4Addr,
    ns: NetNs,
    store: IpamStore,
    table: String,
}

fn write_sysctl(path: String, value: &str) -> Result<(), NodeError> {
    std::fs::write(&path, value).map_err(|source| NodeError::Sysctl {
        path: path.into(),
        source,
    })
}

fn tap_err(name: &str) -> impl FnOnce(std::io::Error) -> LinkError + '_ {
    move |source| LinkError::Tap {
        name: name.to_string(),
        source,
    }
}

impl NodeNetwork {
    /// Sets up the node's pod network in the calling process's namespace.
    pub fn setup(cfg: NodeNetConfig) -> Result<Self, NodeError> {
        Self::setup_in(NetNs::current(), cfg)
    }

    /// Sets up the node's pod network inside `ns`: bridge with the gateway
    /// address, forwarding, `route_localnet` on the bridge and the NAT table
    /// (re-installing the hostPorts recorded in the state). Idempotent; on
    /// failure nothing it created is left behind.
    pub fn setup_in(ns: NetNs, cfg: NodeNetConfig) -> Result<Self, NodeError> {
        let gateway = cfg.validate()?;
        let cidr = cfg.pod_cidr;
        let bridge = cfg.bridge.clone();
        // Check the namespace before touching anything, the state dir included.
        ns.run_async(|| async {
            let nl = Netlink::connect()?;
            preflight(&nl, &bridge, cidr).await
        })??;
        let store = IpamStore::open(&cfg.state_dir, cidr, gateway)?;
        let node = NodeNetwork {
            table: nat::table_name(&cfg.bridge),
            cfg,
            gateway,
            ns,
            store,
        };
        let state = node.store.read()?;
        node.in_ns(|nl| node.plumb_node(nl, state))?;
        tracing::info!(bridge = %node.cfg.bridge, %cidr, %gateway, "node network ready");
        Ok(node)
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeNetConfig {
        &self.cfg
    }

    /// The gateway address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The namespace the node network lives in.
    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    /// Name of this node's nftables table (family `ip`).
    pub fn nft_table(&self) -> &str {
        &self.table
    }

    /// A snapshot of the IPAM state.
    pub fn ipam_state(&self) -> Result<IpamState, NodeError> {
        Ok(self.store.read()?)
    }

    fn in_ns<T, F, Fut>(&self, f: F) -> Result<T, NodeError>
    where
        F: FnOnce(Netlink) -> Fut + Send,
        Fut: Future<Output = Result<T, NodeError>>,
        T: Send,
    {
        self.ns.run_async(|| async move {
            let nl = Netlink::connect()?;
            f(nl).await
        })?
    }

    async fn plumb_node(&self, nl: Netlink, state: IpamState) -> Result<(), NodeError> {
        let bridge = &self.cfg.bridge;
        let (br, created) = nl.ensure_bridge(bridge).await?;
        let result = async {
            let gw_net = Ipv4Net::new(self.gateway, self.cfg.pod_cidr.prefix_len())
                .map_err(|_| ConfigError::CidrTooSmall(self.cfg.pod_cidr))?;
            nl.ensure_addr(br.index, gw_net).await?;
            nl.set_up(br.index).await?;
            write_sysctl("/proc/sys/net/ipv4/ip_forward".into(), "1")?;
            write_sysctl(
                format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
                "1",
            )?;
            let mappings = all_mappings(&state);
            nat::apply(&nat::table_script(
                &self.table,
                self.cfg.pod_cidr,
                self.cfg.masquerade,
                &mappings,
            ))?;
            Ok::<(), NodeError>(())
        }
        .await;
        if let Err(e) = &result {
            if created {
                tracing::warn!(%bridge, error = %e, "node setup failed, removing the bridge");
                let _ = nl.delete(bridge).await;
            }
        }
        result
    }

    /// Attaches a sandbox through a persistent tap on the bridge and returns
    /// its network. Idempotent: the same id gets the same tap, MAC and IP.
    pub fn attach(&self, sandbox_id: &str) -> Result<PodNetwork, NodeError> {
        self.attach_kind(sandbox_id, LinkKind::Tap, None)
    }

    /// Attaches a pod network namespace through a veth pair: the pod end is
    /// named `eth0`, gets the MAC and address, and a default route via the
    /// gateway. Idempotent.
    pub fn attach_veth(&self, sandbox_id: &str, pod_ns: &NetNs) -> Result<PodNetwork, NodeError> {
        self.attach_kind(sandbox_id, LinkKind::Veth, Some(pod_ns))
    }

    fn attach_kind(
        &self,
        id: &str,
        kind: LinkKind,
        pod_ns: Option<&NetNs>,
    ) -> Result<PodNetwork, NodeError> {
        if id.is_empty() {
            return Err(ConfigError::EmptySandboxId.into());
        }
        let (ip, new) = self.store.update(|s| {
            if let Some(rec) = s.sandboxes.get(id) {
                if rec.link != kind {
                    return Err(NodeError::KindMismatch {
                        id: id.to_string(),
                        have: rec.link,
                    });
                }
            }
            Ok(s.allocate(id, kind)?)
        })?;
        let plumbed = match (kind, pod_ns) {
            (LinkKind::Veth, Some(pod_ns)) => self.plumb_veth(id, ip, pod_ns),
            _ => self.plumb_tap(id),
        };
        if let Err(e) = plumbed {
            if new {
                self.store.update(|s| Ok::<_, NodeError>(s.release(id)))?;
            }
            return Err(e);
        }
        tracing::info!(sandbox = id, %ip, ?kind, "pod attached");
        Ok(self.pod_network(id, kind, ip))
    }

    fn pod_network(&self, id: &str, kind: LinkKind, ip: Ipv4Addr) -> PodNetwork {
        let interface = match kind {
            LinkKind::Tap => PodInterface::Tap {
                name: config::tap_name(id),
            },
            LinkKind::Veth => PodInterface::Veth {
                host: config::veth_name(id),
                pod: POD_IFNAME.to_string(),
            },
        };
        PodNetwork {
            sandbox_id: id.to_string(),
            interface,
            mac: MacAddr::for_sandbox(id),
            ip,
            prefix_len: self.cfg.pod_cidr.prefix_len(),
            gateway: self.gateway,
            routes: vec![Route {
                destination: Ipv4Net::default(),
                gateway: Some(self.gateway),
            }],
        }
    }

    fn plumb_tap(&self, id: &str) -> Result<(), NodeError> {
        let name = config::tap_name(id);
        let bridge = &self.cfg.bridge;
        self.in_ns(|nl| async move {
            let existed = nl.link(&name).await?.is_some();
            if !existed {
                sys::create_persistent_tap(&name).map_err(tap_err(&name))?;
            }
            let result = async {
                let tap = nl
                    .link(&name)
                    .await?
                    .ok_or_else(|| LinkError::Missing(name.clone()))?;
                let br = nl
                    .link(bridge)
                    .await?
                    .ok_or_else(|| LinkError::Missing(bridge.clone()))?;
                nl.set_controller(tap.index, br.index).await?;
                nl.set_hairpin(tap.index).await?;
                nl.set_up(tap.index).await?;
                Ok::<(), NodeError>(())
            }
            .await;
            if result.is_err() && !existed {
                let _ = nl.delete(&name).await;
            }
            result
        })
    }

    fn plumb_veth(&self, id: &str, ip: Ipv4Addr, pod_ns: &NetNs) -> Result<(), NodeError> {
        let host = config::veth_name(id);
        let peer = format!("kpeer{}", &host[VETH_PREFIX.len()..]);
        let bridge = &self.cfg.bridge;
        let pod_ns_file = ns_file(pod_ns)?;
        let (host_ref, peer_ref, ns_ref) = (&host, &peer, &pod_ns_file);
        let created = self.in_ns(|nl| async move {
            let (host, peer, pod_ns_file) = (host_ref, peer_ref, ns_ref);
            if let Some(link) = nl.link(host).await? {
                if link.up && link.controller.is_some() {
                    return Ok(false);
                }
                nl.delete(host).await?;
            }
            nl.create_veth(host, peer).await?;
            let result = async {
                let br = nl
                    .link(bridge)
                    .await?
                    .ok_or_else(|| LinkError::Missing(bridge.clone()))?;
                let h = nl
                    .link(host)
                    .await?
                    .ok_or_else(|| LinkError::Missing(host.clone()))?;
                let p = nl
                    .link(peer)
                    .await?
                    .ok_or_else(|| LinkError::Missing(peer.clone()))?;
                nl.move_to_ns(p.index, pod_ns_file).await?;
                nl.set_controller(h.index, br.index).await?;
                nl.set_hairpin(h.index).await?;
                nl.set_up(h.index).await?;
                Ok::<(), NodeError>(())
            }
            .await;
            if result.is_err() {
                let _ = nl.delete(host).await;
            }
            result.map(|()| true)
        })?;
        let net = Ipv4Net::new(ip, self.cfg.pod_cidr.prefix_len())
            .map_err(|_| ConfigError::CidrTooSmall(self.cfg.pod_cidr))?;
        let mac = MacAddr::for_sandbox(id).octets();
        let gateway = self.gateway;
        // Configure the pod end; every step is idempotent, so a repeated
        // attach (or one after a crash half-way) completes the work.
        let inside = pod_ns
            .run_async(|| async {
                let nl = Netlink::connect()?;
                let p = match nl.link(&peer).await? {
                    Some(p) => {
                        nl.rename(p.index, POD_IFNAME).await?;
                        p
                    }
                    None => nl.link(POD_IFNAME).await?.ok_or_else(|| {
                        LinkError::Missing(format!("{POD_IFNAME} in pod namespace"))
                    })?,
                };
                nl.set_mac(p.index, mac).await?;
                nl.ensure_addr(p.index, net).await?;
                nl.set_up(p.index).await?;
                if let Some(lo) = nl.link("lo").await? {
                    nl.set_up(lo.index).await?;
                }
                nl.ensure_default_route(gateway).await?;
                Ok::<(), NodeError>(())
            })
            .map_err(NodeError::from)
            .and_then(|r| r);
        if let Err(e) = inside {
            if created {
                let _ = self.in_ns(|nl| async move { Ok(nl.delete(&host).await?) });
            }
            return Err(e);
        }
        Ok(())
    }

    /// The network of an attached sandbox, if any.
    pub fn pod(&self, sandbox_id: &str) -> Result<Option<PodNetwork>, NodeError> {
        let state = self.store.read()?;
        Ok(state
            .sandboxes
            .get(sandbox_id)
            .map(|r| self.pod_network(sandbox_id, r.link, r.ip)))
    }

    /// Removes a sandbox's hostPorts, links and address. Idempotent: an
    /// unknown id (or one half torn down) is not an error.
    pub fn detach(&self, sandbox_id: &str) -> Result<(), NodeError> {
        let state = self.store.read()?;
        let mappings: Vec<_> = state
            .sandboxes
            .get(sandbox_id)
            .map(|r| r.host_ports.iter().map(|m| (*m, r.ip)).collect())
            .unwrap_or_default();
        let tap = config::tap_name(sandbox_id);
        let veth = config::veth_name(sandbox_id);
        self.in_ns(|nl| async move {
            nat::apply(&nat::remove_mappings_script(&self.table, &mappings))?;
            nl.delete(&tap).await?;
            nl.delete(&veth).await?;
            Ok(())
        })?;
        self.store
            .update(|s| Ok::<_, NodeError>(s.release(sandbox_id)))?;
        tracing::info!(sandbox = sandbox_id, "pod detached");
        Ok(())
    }

    /// Maps host ports to an attached sandbox. Idempotent for mappings it
    /// already has; a port held by another sandbox is an error and nothing
    /// is changed.
    pub fn add_host_ports(
        &self,
        sandbox_id: &str,
        mappings: &[HostPortMapping],
    ) -> Result<(), NodeError> {
        for m in mappings {
            m.validate()?;
        }
        self.store.update(|s| {
            let ip = s
                .sandboxes
                .get(sandbox_id)
                .ok_or_else(|| NodeError::NotAttached(sandbox_id.to_string()))?
                .ip;
            let mut fresh = Vec::new();
            for m in mappings {
                for (owner, rec) in &s.sandboxes {
                    for held in &rec.host_ports {
                        let same_port =
                            held.protocol == m.protocol && held.host_port == m.host_port;
                        if same_port && (owner != sandbox_id || held != m) {
                            return Err(NodeError::HostPortInUse {
                                protocol: m.protocol,
                                host_port: m.host_port,
                                owner: owner.clone(),
                            });
                        }
                    }
                }
                if !fresh.contains(m) && !s.sandboxes[sandbox_id].host_ports.contains(m) {
                    fresh.push(*m);
                }
            }
            let with_ip: Vec<_> = fresh.iter().map(|m| (*m, ip)).collect();
            let script = nat::add_mappings_script(&self.table, &with_ip);
            self.ns.run(|| nat::apply(&script))??;
            if let Some(rec) = s.sandboxes.get_mut(sandbox_id) {
                rec.host_ports.extend(fresh);
            }
            Ok(())
        })
    }

    /// Removes host port mappings of a sandbox. Idempotent.
    pub fn remove_host_ports(
        &self,
        sandbox_id: &str,
        mappings: &[HostPortMapping],
    ) -> Result<(), NodeError> {
        self.store.update(|s| {
            let Some(rec) = s.sandboxes.get_mut(sandbox_id) else {
                return Ok(());
            };
            let gone: Vec<_> = mappings
                .iter()
                .filter(|m| rec.host_ports.contains(m))
                .map(|m| (*m, rec.ip))
                .collect();
            let script = nat::remove_mappings_script(&self.table, &gone);
            self.ns.run(|| nat::apply(&script))??;
            rec.host_ports.retain(|m| !mappings.contains(m));
            Ok(())
        })
    }

    /// Frees everything held by sandboxes not in `live` (their addresses,
    /// links and hostPorts), deletes pod links on this bridge that belong to
    /// no recorded sandbox, re-creates missing taps of live sandboxes, and
    /// rewrites the NAT table from the state, so a crash at any point leaks
    /// nothing.
    pub fn reconcile<S: AsRef<str>>(&self, live: &[S]) -> Result<ReconcileReport, NodeError> {
        let live: HashSet<&str> = live.iter().map(|s| s.as_ref()).collect();
        let mut report = ReconcileReport::default();
        for id in self.store.read()?.stale(&live) {
            self.detach(&id)?;
            report.released.push(id);
        }
        let state = self.store.read()?;
        let known: HashSet<String> = state
            .sandboxes
            .keys()
            .flat_map(|id| [config::tap_name(id), config::veth_name(id)])
            .collect();
        let bridge = &self.cfg.bridge;
        let (removed, present) = self.in_ns(|nl| async move {
            let br = nl.link(bridge).await?.map(|l| l.index);
            let mut removed = Vec::new();
            let mut present = HashSet::new();
            for link in nl.links().await? {
                let ours = link.name.starts_with(TAP_PREFIX) || link.name.starts_with(VETH_PREFIX);
                let on_bridge = link.controller.is_none() || link.controller == br;
                if ours && on_bridge && !known.contains(&link.name) {
                    if nl.delete(&link.name).await? {
                        removed.push(link.name);
                    }
                } else {
                    present.insert(link.name);
                }
            }
            Ok((removed, present))
        })?;
        report.removed_links = removed;
        // Taps of live sandboxes that vanished (e.g. after a node reboot) are
        // made again, so the VMM can attach to them.
        for (id, rec) in &state.sandboxes {
            let tap = config::tap_name(id);
            if rec.link == LinkKind::Tap && !present.contains(&tap) {
                self.plumb_tap(id)?;
                report.restored_links.push(tap);
            }
        }
        self.store.update(|s| {
            let script = nat::table_script(
                &self.table,
                self.cfg.pod_cidr,
                self.cfg.masquerade,
                &all_mappings(s),
            );
            self.ns.run(|| nat::apply(&script))??;
            Ok::<(), NodeError>(())
        })?;
        tracing::info!(?report, "pod network reconciled");
        Ok(report)
    }

    /// Removes the whole node network: every pod link, the NAT table, the
    /// bridge and the IPAM state. Idempotent.
    pub fn teardown(&self) -> Result<(), NodeError> {
        let state = self.store.read()?;
        let links: Vec<String> = state
            .sandboxes
            .keys()
            .flat_map(|id| [config::tap_name(id), config::veth_name(id)])
            .collect();
        let bridge = &self.cfg.bridge;
        let table = &self.table;
        self.in_ns(|nl| async move {
            for l in &links {
                nl.delete(l).await?;
            }
            nat::apply(&nat::delete_table_script(table))?;
            nl.delete(bridge).await?;
            Ok(())
        })?;
        self.store.update(|s| {
            s.sandboxes.clear();
            s.last = None;
            Ok::<(), NodeError>(())
        })?;
        Ok(())
    }
}

fn all_mappings(state: &IpamState) -> Vec<(HostPortMapping, Ipv4Addr)> {
    state
        .sandboxes
        .values()
        .flat_map(|r| r.host_ports.iter().map(move |m| (*m, r.ip)))
        .collect()
}

fn ns_file(ns: &NetNs) -> Result<File, NodeError> {
    let path = match ns {
        NetNs::Current => PathBuf::from("/proc/self/ns/net"),
        NetNs::Path(p) => p.clone(),
    };
    File::open(&path).map_err(|source| NsError::Open { path, source }.into())
}

/// Read-only checks before setup changes anything: a link in the way of
/// the bridge, and networks overlapping the pod CIDR.
async fn preflight(nl: &Netlink, bridge: &str, cidr: Ipv4Net) -> Result<(), NodeError> {
    let links = nl.links().await?;
    if let Some(l) = links.iter().find(|l| l.name == bridge) {
        if l.kind.as_deref() != Some("bridge") {
            return Err(LinkError::WrongKind {
                name: bridge.to_string(),
                kind: l.kind.clone().unwrap_or_else(|| "device".into()),
                wanted: "bridge".into(),
            }
            .into());
        }
    }
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| index.to_string())
    };
    let addrs = nl.ipv4_addrs().await?;
    let routes = nl.ipv4_routes().await?;
    for (index, net) in addrs.into_iter().chain(routes) {
        let link = name_of(index);
        if link == bridge {
            continue;
        }
        let existing = net.trunc();
        if existing.contains(&cidr.network()) || cidr.contains(&existing.network()) {
            return Err(NodeError::Overlap {
                cidr,
                existing,
                link,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_network_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NodeNetwork>();
        assert_send_sync::<PodNetwork>();
    }

    #[test]
    fn kernel_ip_arg_uses_the_cidr_netmask() {
        let pod = PodNetwork {
            sandbox_id: "x".into(),
            interface: PodInterface::Tap {
                name: "ktap0".into(),
            },
            mac: MacAddr::for_sandbox("x"),
            ip: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 16,
            gateway: Ipv4Addr::new(10, 1, 0, 1),
            routes: Vec::new(),
        };
        assert_eq!(
            pod.kernel_ip_arg("eth0"),
            "ip=10.1.2.3::10.1.0.1:255.255.0.0::eth0:off"
        );
        assert_eq!(pod.address().to_string(), "10.1.2.3/16");
        assert_eq!(pod.tap_name(), Some("ktap0"));
    }
}
