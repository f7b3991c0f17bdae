//! What a Service being created or updated needs from the allocators (pure): which ClusterIP
//! and node ports it keeps from the stored object, which explicit values must be reserved,
//! which must be picked, and which requests are refused (upstream's messages).

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::ServiceNetwork;
use crate::status::Cause;

/// The ClusterIP a Service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpNeed {
    /// No address: headless, ExternalName, or the one it already holds.
    Nothing,
    /// This address, asked for explicitly: reserve it or refuse.
    Explicit(Ipv4Addr),
    /// Pick a free address.
    Pick,
}

/// The node port one service port needs (by index in `spec.ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortNeed {
    /// None, or the one it already holds.
    Nothing,
    /// This port, asked for explicitly.
    Explicit(u16),
    /// Pick a free port.
    Pick,
}

/// Everything a write needs from the allocators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The ClusterIP.
    pub ip: IpNeed,
    /// One entry per `spec.ports` element.
    pub ports: Vec<PortNeed>,
}

fn spec_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

/// Whether `svc`'s ports carry node ports (NodePort, and LoadBalancer unless
/// `allocateLoadBalancerNodePorts: false`).
pub fn wants_node_ports(svc: &Value) -> bool {
    match spec_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc["spec"]["allocateLoadBalancerNodePorts"] != json!(false),
        _ => false,
    }
}

/// The ClusterIP `svc` holds (an address, not `None`).
pub fn held_ip(svc: &Value) -> Option<Ipv4Addr> {
    svc["spec"]["clusterIP"].as_str()?.parse().ok()
}

/// The node ports `svc` holds.
pub fn held_ports(svc: &Value) -> Vec<u16> {
    let mut out: Vec<u16> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64())
        .filter_map(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn asked_ip(spec: &Value, causes: &mut Vec<Cause>) -> Option<String> {
    let ip = spec["clusterIP"].as_str().unwrap_or("");
    let first = spec["clusterIPs"][0].as_str().unwrap_or("");
    match (ip.is_empty(), first.is_empty()) {
        (true, true) => None,
        (false, true) => Some(ip.to_string()),
        (true, false) => Some(first.to_string()),
        (false, false) if ip == first => Some(ip.to_string()),
        (false, false) => {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                first,
                "must match `clusterIP` when both are specified",
            ));
            None
        }
    }
}

/// Decides what `new` needs, keeping what `old` (the stored object, on update) already holds:
/// an omitted ClusterIP or node port keeps the stored one, the ClusterIP may not change,
/// explicit values are checked against the ranges and the DNS address. Fills kept values into
/// `new` and drops node ports a type without them may not carry.
pub fn plan(
    net: &ServiceNetwork,
    old: Option<&Value>,
    new: &mut Value,
) -> Result<Plan, Vec<Cause>> {
    let mut causes = Vec::new();
    let ip = plan_ip(net, old, new, &mut causes);
    let ports = plan_ports(net, old, new, &mut causes);
    if causes.is_empty() {
        Ok(Plan { ip, ports })
    } else {
        Err(causes)
    }
}

fn set_ip(new: &mut Value, ip: &str) {
    new["spec"]["clusterIP"] = json!(ip);
    new["spec"]["clusterIPs"] = json!([ip]);
}

fn plan_ip(
    net: &ServiceNetwork,
    old: Option<&Value>,
    new: &mut Value,
    causes: &mut Vec<Cause>,
) -> IpNeed {
    if spec_type(new) == "ExternalName" {
        // An ExternalName Service has no address; one it had is released.
        if let Some(spec) = new["spec"].as_object_mut() {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        return IpNeed::Nothing;
    }
    let stored = old
        .filter(|o| spec_type(o) != "ExternalName")
        .and_then(|o| o["spec"]["clusterIP"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(stored) = stored {
        let spec = &new["spec"];
        let changed = [spec["clusterIP"].as_str(), spec["clusterIPs"][0].as_str()]
            .into_iter()
            .flatten()
            .find(|a| !a.is_empty() && *a != stored)
            .map(str::to_string);
        match changed {
            None => set_ip(new, &stored),
            Some(a) => causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                &a,
                "may not change once set",
            )),
        }
        return IpNeed::Nothing;
    }
    let asked = asked_ip(&new["spec"], causes);
    let Some(asked) = asked else {
        return IpNeed::Pick;
    };
    if asked == "None" {
        set_ip(new, "None");
        return IpNeed::Nothing;
    }
    let Ok(ip) = asked.parse::<Ipv4Addr>() else {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &asked,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
        return IpNeed::Nothing;
    };
    if !net.usable_ip(ip) {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &asked,
            format!(
                "provided IP is not in the valid range. The range of valid IPs is {}",
                net.cidr
            ),
        ));
        return IpNeed::Nothing;
    }
    let ns = new["metadata"]["namespace"].as_str().unwrap_or("");
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    if Some(ip) == net.dns_ip() && (ns, name) != ("kube-system", "kube-dns") {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &asked,
            "provided IP is reserved for the cluster DNS Service kube-system/kube-dns",
        ));
        return IpNeed::Nothing;
    }
    set_ip(new, &asked);
    IpNeed::Explicit(ip)
}

/// The node port `old` held for a port like `p` (same port and protocol, or same name).
fn stored_node_port(old: &Value, p: &Value) -> Option<u16> {
    let proto = |v: &Value| v["protocol"].as_str().unwrap_or("TCP").to_string();
    let ports = old["spec"]["ports"].as_array()?;
    let same_port = ports
        .iter()
        .find(|o| o["port"] == p["port"] && proto(o) == proto(p));
    let same_name = || {
        let name = p["name"].as_str().filter(|n| !n.is_empty())?;
        ports.iter().find(|o| o["name"].as_str() == Some(name))
    };
    let o = same_port.or_else(same_name)?;
    o["nodePort"]
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

fn plan_ports(
    net: &ServiceNetwork,
    old: Option<&Value>,
    new: &mut Value,
    causes: &mut Vec<Cause>,
) -> Vec<PortNeed> {
    let wants = wants_node_ports(new);
    let old_held: Vec<u16> = old
        .filter(|o| wants_node_ports(o))
        .map(held_ports)
        .unwrap_or_default();
    let old_wants = old.filter(|o| wants_node_ports(o));
    let kind = spec_type(new).to_string();
    let Some(ports) = new["spec"]["ports"].as_array_mut() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter_mut().enumerate() {
        let asked = p["nodePort"].as_i64().unwrap_or(0);
        if !wants {
            if asked != 0 && old.is_none() {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    message: format!("Forbidden: may not be used when `type` is '{kind}'"),
                    field: format!("spec.ports[{i}].nodePort"),
                });
            }
            // On update, a type without node ports drops them (they are released).
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
            out.push(PortNeed::Nothing);
            continue;
        }
        if asked == 0 {
            match old_wants.and_then(|o| stored_node_port(o, p)) {
                Some(n) => {
                    p["nodePort"] = json!(n);
                    out.push(PortNeed::Nothing);
                }
                None => out.push(PortNeed::Pick),
            }
            continue;
        }
        match u16::try_from(asked)
            .ok()
            .filter(|n| net.node_ports.contains(n))
        {
            Some(n) if old_held.contains(&n) => out.push(PortNeed::Nothing),
            Some(n) => out.push(PortNeed::Explicit(n)),
            None => {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    &asked.to_string(),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        net.node_ports.start(),
                        net.node_ports.end()
                    ),
                ));
                out.push(PortNeed::Nothing);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> ServiceNetwork {
        ServiceNetwork::default()
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": "web"}, "spec": spec})
    }

    fn fields(e: Vec<Cause>) -> Vec<String> {
        e.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn create_picks_or_takes_explicit_values() {
        let mut s = svc(json!({"ports": [{"port": 80}]}));
        assert_eq!(plan(&net(), None, &mut s).unwrap().ip, IpNeed::Pick);
        let mut s = svc(json!({"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}));
        let p = plan(&net(), None, &mut s).unwrap();
        assert_eq!(p.ip, IpNeed::Explicit("10.96.5.5".parse().unwrap()));
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.5.5"]));
        let mut s = svc(json!({"clusterIPs": ["10.96.5.6"], "ports": [{"port": 80}]}));
        let p = plan(&net(), None, &mut s).unwrap();
        assert_eq!(p.ip, IpNeed::Explicit("10.96.5.6".parse().unwrap()));
        assert_eq!(s["spec"]["clusterIP"], "10.96.5.6");
        let mut s = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(plan(&net(), None, &mut s).unwrap().ip, IpNeed::Nothing);
        assert_eq!(s["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn refuses_bad_explicit_addresses() {
        for (ip, why) in [
            (
                "10.112.0.5",
                "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
            ),
            ("10.96.0.0", "not in the valid range"),
            ("10.111.255.255", "not in the valid range"),
            ("banana", "must be a valid IP address"),
            ("10.96.0.10", "reserved for the cluster DNS Service"),
        ] {
            let mut s = svc(json!({"clusterIP": ip, "ports": [{"port": 80}]}));
            let e = fields(plan(&net(), None, &mut s).unwrap_err());
            assert!(
                e[0].starts_with("spec.clusterIPs[0]: Invalid value: "),
                "{e:?}"
            );
            assert!(e[0].contains(why), "{ip}: {e:?}");
        }
        let mut dns = json!({"metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}});
        assert!(plan(&net(), None, &mut dns).is_ok());
        let mut s = svc(
            json!({"clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.6"], "ports": [{"port": 80}]}),
        );
        assert!(
            fields(plan(&net(), None, &mut s).unwrap_err())[0].contains("must match `clusterIP`")
        );
    }

    #[test]
    fn update_keeps_what_was_allocated() {
        let old = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.1.7", "clusterIPs": ["10.96.1.7"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}),
        );
        // kubectl apply of the original manifest: no clusterIP, no nodePorts.
        let mut new = svc(json!({"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "extra", "port": 8080}]}));
        let p = plan(&net(), Some(&old), &mut new).unwrap();
        assert_eq!(p.ip, IpNeed::Nothing);
        assert_eq!(
            p.ports,
            vec![PortNeed::Nothing, PortNeed::Nothing, PortNeed::Pick]
        );
        assert_eq!(new["spec"]["clusterIP"], "10.96.1.7");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(new["spec"]["ports"][1]["nodePort"], 30053);
        // A renumbered port keeps the node port of the same name.
        let mut new = svc(json!({"type": "NodePort", "ports": [{"name": "http", "port": 81}]}));
        plan(&net(), Some(&old), &mut new).unwrap();
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        // A held explicit port needs nothing; a new explicit one is reserved.
        let mut new = svc(
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30053}, {"name": "b", "port": 9, "nodePort": 31000}]}),
        );
        let p = plan(&net(), Some(&old), &mut new).unwrap();
        assert_eq!(p.ports, vec![PortNeed::Nothing, PortNeed::Explicit(31000)]);
    }

    #[test]
    fn cluster_ip_is_immutable_and_external_name_drops_it() {
        let old = svc(json!({"clusterIP": "10.96.1.7", "ports": [{"port": 80}]}));
        let mut new = svc(json!({"clusterIP": "10.96.1.8", "ports": [{"port": 80}]}));
        let e = fields(plan(&net(), Some(&old), &mut new).unwrap_err());
        assert_eq!(
            e,
            vec!["spec.clusterIPs[0]: Invalid value: \"10.96.1.8\": may not change once set"]
        );
        let mut new = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        assert!(plan(&net(), Some(&old), &mut new).is_err());
        let mut new = svc(
            json!({"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.1.7"}),
        );
        assert_eq!(
            plan(&net(), Some(&old), &mut new).unwrap().ip,
            IpNeed::Nothing
        );
        assert!(new["spec"].get("clusterIP").is_none());
        // Back from ExternalName: a new address is picked.
        let mut back = svc(json!({"ports": [{"port": 80}]}));
        assert_eq!(
            plan(&net(), Some(&new), &mut back).unwrap().ip,
            IpNeed::Pick
        );
    }

    #[test]
    fn node_ports_follow_the_type() {
        let mut s = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 29999}]}));
        let e = fields(plan(&net(), None, &mut s).unwrap_err());
        assert_eq!(e, vec!["spec.ports[0].nodePort: Invalid value: \"29999\": provided port is not in the valid range. The range of valid ports is 30000-32767"]);
        let mut s = svc(json!({"ports": [{"port": 80, "nodePort": 30001}]}));
        let e = fields(plan(&net(), None, &mut s).unwrap_err());
        assert_eq!(
            e,
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let mut s = svc(
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}),
        );
        assert_eq!(
            plan(&net(), None, &mut s).unwrap().ports,
            vec![PortNeed::Nothing]
        );
        // NodePort → ClusterIP on update drops the node ports.
        let old = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.1.7", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let mut new = svc(json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            plan(&net(), Some(&old), &mut new).unwrap().ports,
            vec![PortNeed::Nothing]
        );
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(held_ports(&new), Vec::<u16>::new());
    }
}
