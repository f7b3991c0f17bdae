//! Services and EndpointSlices turned into the proxy's own model: one
//! [`ServicePort`] per (Service, port, protocol) with the endpoints that may
//! serve it. Pure: no I/O, so every rule of endpoint selection is unit-tested.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use netns::Protocol;

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// Problems in one object; the object is skipped, the rest still proxied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A port number outside 1..=65535.
    #[error("service {service}: port {port} out of range")]
    BadPort {
        /// `namespace/name`.
        service: String,
        /// The value given.
        port: i32,
    },
}

/// What the model needs to know about this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// Addresses NodePorts and LoadBalancer ports are served on.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod CIDR (None: masquerade all service traffic).
    pub cluster_cidr: Option<Ipv4Net>,
}

/// Identity of one service port: stable across syncs, used for chain names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The Service's `port`.
    pub port: u16,
}

impl PortKey {
    /// `ns/name/proto/port`, the readable part of chain names.
    pub fn base(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.protocol, self.port
        )
    }
}

/// One endpoint of a service port, as EndpointSlices report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// On this node (`nodeName` equals ours).
    pub local: bool,
    /// `conditions.ready` (unset counts as ready).
    pub ready: bool,
    /// `conditions.serving` (unset: same as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset: false).
    pub terminating: bool,
}

/// One proxied (Service, port) with everything the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Identity.
    pub key: PortKey,
    /// ClusterIPs (IPv4 only; empty for headless).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// NodePort, for `NodePort` and `LoadBalancer` Services.
    pub node_port: Option<u16>,
    /// Addresses served as external IPs on `port`: `spec.externalIPs`, and
    /// for `LoadBalancer` Services the node IPs (kennel's own load balancer).
    pub external_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity timeout in seconds, if `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// Every endpoint reported, sorted and de-duplicated.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// Endpoints used for cluster-wide traffic: the ready ones, or if none is
    /// ready, the serving-and-terminating ones (KEP-1669).
    pub fn cluster_endpoints(&self) -> Vec<Endpoint> {
        usable(self.endpoints.iter().copied())
    }

    /// Like [`Self::cluster_endpoints`], only those on this node.
    pub fn local_endpoints(&self) -> Vec<Endpoint> {
        usable(self.endpoints.iter().copied().filter(|e| e.local))
    }

    /// True if the Service has any external entry point.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

fn usable(eps: impl Iterator<Item = Endpoint> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

/// The whole proxied state, keyed by port identity.
pub type Model = BTreeMap<PortKey, ServicePort>;

fn proto(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None, // SCTP is not proxied.
    }
}

fn port_u16(service: &str, port: i32) -> Result<u16, ModelError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ModelError::BadPort {
            service: service.to_string(),
            port,
        })
}

fn ipv4s<'a>(list: impl Iterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = list.filter_map(|s| s.parse().ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// Builds the model from the Services and EndpointSlices in the caches.
/// Objects that cannot be proxied are skipped and reported in the second
/// value; ExternalName Services and SCTP ports produce nothing.
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
) -> (Model, Vec<ModelError>) {
    // (namespace, service) -> (port name, protocol) -> endpoints
    type SliceIndex = BTreeMap<(String, String), BTreeMap<(String, Protocol), Vec<Endpoint>>>;
    let mut index: SliceIndex = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let by_port = index.entry((ns, svc.clone())).or_default();
        for p in slice.ports.iter().flatten() {
            let (Some(proto), Some(port)) = (
                proto(p.protocol.as_deref()),
                p.port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
            ) else {
                continue;
            };
            let list = by_port
                .entry((p.name.clone().unwrap_or_default(), proto))
                .or_default();
            for ep in &slice.endpoints {
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let local = ep.node_name.as_deref() == Some(node.node_name.as_str());
                for ip in ipv4s(ep.addresses.iter()) {
                    list.push(Endpoint {
                        ip,
                        port,
                        local,
                        ready,
                        serving,
                        terminating,
                    });
                }
            }
        }
    }

    let mut model = Model::new();
    let mut errors = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let id = format!("{ns}/{name}");
        let mut cluster_ips = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ipv4s(ips.iter()),
            _ => ipv4s(spec.cluster_ip.iter()),
        };
        cluster_ips.retain(|ip| !ip.is_unspecified());
        let mut external_ips = ipv4s(spec.external_ips.iter().flatten());
        if ty == "LoadBalancer" {
            external_ips.extend(node.node_ips.iter().copied());
            external_ips.sort();
            external_ips.dedup();
        }
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
            && (ty == "NodePort" || ty == "LoadBalancer" || !external_ips.is_empty());
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let eps_by_port = index.get(&(ns.clone(), name.clone()));
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = proto(p.protocol.as_deref()) else {
                continue;
            };
            let port = match port_u16(&id, p.port) {
                Ok(port) => port,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let node_port = match (ty, p.node_port) {
                ("NodePort" | "LoadBalancer", Some(np)) => match port_u16(&id, np) {
                    Ok(np) => Some(np),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                },
                _ => None,
            };
            if cluster_ips.is_empty() && node_port.is_none() && external_ips.is_empty() {
                continue; // headless: DNS only
            }
            let mut endpoints = eps_by_port
                .and_then(|m| m.get(&(p.name.clone().unwrap_or_default(), protocol)))
                .cloned()
                .unwrap_or_default();
            endpoints.sort();
            endpoints.dedup_by_key(|e| (e.ip, e.port));
            let key = PortKey {
                namespace: ns.clone(),
                name: name.clone(),
                protocol,
                port,
            };
            model.insert(
                key.clone(),
                ServicePort {
                    key,
                    cluster_ips: cluster_ips.clone(),
                    node_port,
                    external_ips: external_ips.clone(),
                    affinity_timeout,
                    external_local,
                    internal_local,
                    endpoints,
                },
            );
        }
    }
    (model, errors)
}

#[cfg(test)]
mod tests;
