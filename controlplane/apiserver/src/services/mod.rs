//! Service ClusterIP and NodePort allocation, as upstream's allocators: every address or port
//! a Service holds is a reservation key in the store, created with create-if-absent, so two
//! concurrent creates (even on two API servers sharing etcd) never get the same value.
//!
//! - [`plan`]: what a created or updated Service needs (pure; keeps values an update omits).
//! - [`reserve`]: the reservation keys.
//! - [`repair`]: releases what deleted or changed Services held, and reconciles the keys with
//!   the stored Services at start and periodically (a crash between reserving and writing).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use crate::handlers::ApiState;
use crate::status::{ApiError, Cause};

pub mod plan;
pub mod repair;
pub mod reserve;

pub use reserve::Held;

/// The Service network of the cluster.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceNetwork {
    /// ClusterIPs come from here (`--service-cluster-ip-range`, default 10.96.0.0/12 as kubeadm).
    pub cidr: Ipv4Net,
    /// NodePorts come from here (`--service-node-port-range`, default 30000-32767).
    pub node_ports: RangeInclusive<u16>,
    /// The address only `kube-system/kube-dns` may take; default the CIDR's tenth address.
    pub dns_ip: Option<Ipv4Addr>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        ServiceNetwork {
            cidr: "10.96.0.0/12".parse().expect("default service CIDR"),
            node_ports: 30000..=32767,
            dns_ip: None,
        }
    }
}

impl ServiceNetwork {
    /// Whether `ip` is a host address of the CIDR.
    pub fn usable_ip(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip) && ip != self.cidr.network() && ip != self.cidr.broadcast()
    }

    fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let ip = Ipv4Addr::from(u32::from(self.cidr.network()).checked_add(n)?);
        self.usable_ip(ip).then_some(ip)
    }

    /// The `kubernetes` Service's address: the CIDR's first.
    pub fn api_ip(&self) -> Ipv4Addr {
        self.nth(1).unwrap_or(self.cidr.network())
    }

    /// The cluster DNS address.
    pub fn dns_ip(&self) -> Option<Ipv4Addr> {
        self.dns_ip.or_else(|| self.nth(10))
    }

    /// Dynamic picks, in order: above the low band kept for explicit addresses (upstream's
    /// static subrange: a sixteenth of the range, 16 to 256 addresses), then the band itself.
    pub fn candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = 1u64 << (32 - u32::from(self.cidr.prefix_len()));
        let band = (size / 16).clamp(16, 256) as u32;
        let last = u32::try_from(size.saturating_sub(2)).unwrap_or(u32::MAX);
        let reserved = [Some(self.api_ip()), self.dns_ip()];
        (band + 1..=last)
            .chain(2..=band.min(last))
            .filter_map(|n| self.nth(n))
            .filter(move |ip| !reserved.contains(&Some(*ip)))
    }
}

fn invalid(obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        kind: "Service".into(),
        name: obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
        causes,
    }
}

/// Admits a Service write: fills kept values into `new`, reserves explicit ones (422 when
/// taken) and picks the missing ones. The caller releases the returned [`Held`] when its
/// write fails (what the old object held is released by [`repair`] once the write is seen).
pub async fn admit(
    state: &ApiState,
    old: Option<&Value>,
    new: &mut Value,
) -> Result<Held, ApiError> {
    let net = &state.services;
    let plan = plan::plan(net, old, new).map_err(|c| invalid(new, c))?;
    let owner = reserve::Owner::of(new);
    let store = state.store.as_ref();
    let mut held = Held::default();
    let result = async {
        match plan.ip {
            plan::IpNeed::Nothing => {}
            plan::IpNeed::Explicit(ip) => {
                if !held.reserve(store, &reserve::ip_key(ip), &owner).await? {
                    return Err(invalid(
                        new,
                        vec![Cause::invalid(
                            "spec.clusterIPs",
                            &ip.to_string(),
                            "failed to allocate IP: provided IP is already allocated",
                        )],
                    ));
                }
            }
            plan::IpNeed::Pick => {
                let ip = held.pick_ip(store, net, &owner).await?;
                new["spec"]["clusterIP"] = ip.to_string().into();
                new["spec"]["clusterIPs"] = vec![ip.to_string()].into();
            }
        }
        for (i, need) in plan.ports.iter().enumerate() {
            match *need {
                plan::PortNeed::Nothing => {}
                plan::PortNeed::Explicit(n) => {
                    if !held.reserve(store, &reserve::port_key(n), &owner).await? {
                        return Err(invalid(
                            new,
                            vec![Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &n.to_string(),
                                "provided port is already allocated",
                            )],
                        ));
                    }
                }
                plan::PortNeed::Pick => {
                    let n = held.pick_port(store, net, &owner).await?;
                    new["spec"]["ports"][i]["nodePort"] = n.into();
                }
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(held),
        Err(e) => {
            held.release(store).await;
            Err(e)
        }
    }
}
