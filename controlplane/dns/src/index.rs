//! The cluster's DNS records, built from Services and EndpointSlices per the Kubernetes DNS
//! specification (schema 1.1.0). Pure: [`Index::build`] turns objects into a map from lowercase
//! names (with the trailing dot) to records; queries never reach the API server.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label naming a slice's Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// IPv4 address.
    A(Ipv4Addr),
    /// Service record: port and target name.
    Srv {
        /// Port.
        port: u16,
        /// Target (absolute name).
        target: String,
    },
    /// Reverse pointer (absolute name).
    Ptr(String),
    /// Alias (absolute name, for ExternalName Services).
    Cname(String),
    /// Text.
    Txt(String),
}

/// Every record of the cluster domain, plus the names that exist without records of their own.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// The cluster domain, lowercase with the trailing dot (`cluster.local.`).
    pub domain: String,
    records: HashMap<String, Vec<Rec>>,
    /// Names with no records that still exist (parents of records: `svc.cluster.local.`).
    interior: HashSet<String>,
}

/// `cluster.local` → `cluster.local.`, lowercase.
pub fn absolute(name: &str) -> String {
    let mut n = name.trim_end_matches('.').to_ascii_lowercase();
    n.push('.');
    n
}

/// Whether absolute `name` is `domain` or below it (no allocation: this is on every query).
pub fn under(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

/// `1.2.3.4` → `4.3.2.1.in-addr.arpa.`
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

/// `1.2.3.4` → `1-2-3-4`, the label the specification gives an address.
pub fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// `1-2-3-4` → the address, if the label is one.
pub fn undashed(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

impl Index {
    /// The records of `domain` for these objects.
    pub fn build(domain: &str, services: &[&Service], slices: &[&EndpointSlice]) -> Self {
        let mut idx = Index {
            domain: absolute(domain),
            ..Default::default()
        };
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if let (Some(ns), Some(svc)) = (
                s.metadata.namespace.clone(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME))
                    .cloned(),
            ) {
                by_service.entry((ns, svc)).or_default().push(s);
            }
        }
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let empty = Vec::new();
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .unwrap_or(&empty);
            idx.add_service(svc, ns, name, slices);
        }
        let version = format!("dns-version.{}", idx.domain);
        idx.add(&version, Rec::Txt("1.1.0".into()));
        idx
    }

    fn add(&mut self, name: &str, rec: Rec) {
        let name = absolute(name);
        let list = self.records.entry(name.clone()).or_default();
        if !list.contains(&rec) {
            list.push(rec);
        }
        // Every parent down to the domain exists (empty non-terminals answer NODATA).
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.is_empty() || parent.len() < self.domain.len() {
                break;
            }
            self.interior.insert(parent.to_string());
            rest = parent;
        }
    }

    /// SRV `_<port>._<proto>.<fqdn>` → `target`, for named ports only.
    fn add_srv(
        &mut self,
        fqdn: &str,
        name: Option<&str>,
        proto: Option<&str>,
        port: i32,
        target: &str,
    ) {
        let (Some(port_name), Ok(port)) = (name.filter(|n| !n.is_empty()), u16::try_from(port))
        else {
            return;
        };
        let proto = proto.unwrap_or("TCP").to_ascii_lowercase();
        self.add(
            &format!("_{port_name}._{proto}.{fqdn}"),
            Rec::Srv {
                port,
                target: target.to_string(),
            },
        );
    }

    fn add_service(&mut self, svc: &Service, ns: &str, name: &str, slices: &[&EndpointSlice]) {
        let Some(spec) = &svc.spec else { return };
        let fqdn = format!("{name}.{ns}.svc.{}", self.domain);
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = &spec.external_name {
                self.add(&fqdn, Rec::Cname(absolute(target)));
            }
            return;
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
        if cluster_ip != "None" {
            let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() else {
                return;
            };
            self.add(&fqdn, Rec::A(ip));
            self.add(&reverse_name(ip), Rec::Ptr(fqdn.clone()));
            for p in &ports {
                self.add_srv(
                    &fqdn,
                    p.name.as_deref(),
                    p.protocol.as_deref(),
                    p.port,
                    &fqdn,
                );
            }
            return;
        }
        // Headless: the endpoints themselves.
        let publish = spec.publish_not_ready_addresses == Some(true);
        for slice in slices {
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !publish {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    self.add(&fqdn, Rec::A(ip));
                    let host = match &ep.hostname {
                        Some(h) if !h.is_empty() => {
                            let host = format!("{h}.{fqdn}");
                            self.add(&reverse_name(ip), Rec::Ptr(host.clone()));
                            host
                        }
                        _ => format!("{}.{fqdn}", dashed(ip)),
                    };
                    self.add(&host, Rec::A(ip));
                    for p in slice.ports.iter().flatten() {
                        let port = p.port.unwrap_or(0);
                        self.add_srv(&fqdn, p.name.as_deref(), p.protocol.as_deref(), port, &host);
                    }
                }
            }
        }
    }

    /// Whether `name` (absolute, lowercase) is in the cluster domain.
    pub fn in_domain(&self, name: &str) -> bool {
        under(name, &self.domain)
    }

    /// The records of `name`, `None` if the name does not exist. Pod names
    /// (`a-b-c-d.<ns>.pod.<domain>`) exist for every well-formed address.
    pub fn lookup(&self, name: &str) -> Option<Vec<Rec>> {
        if let Some(r) = self.records.get(name) {
            return Some(r.clone());
        }
        if name == self.domain || self.interior.contains(name) {
            return Some(Vec::new());
        }
        // Below the domain, without allocating: `head` is what precedes it, with its dot.
        let head = name.strip_suffix(self.domain.as_str())?;
        if head == "svc." || head == "pod." {
            return Some(Vec::new());
        }
        let pod = head.strip_suffix(".pod.")?;
        match pod.split_once('.') {
            Some((label, ns)) if !ns.contains('.') => undashed(label).map(|ip| vec![Rec::A(ip)]),
            None => Some(Vec::new()),
            _ => None,
        }
    }

    /// Whether a PTR record exists for `name` (a reverse name).
    pub fn has_ptr(&self, name: &str) -> bool {
        self.records.contains_key(name)
    }

    /// How many names hold records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no name holds records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
        let services = vec![
            svc(
                json!({"metadata": {"name": "kubia", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9000}]}}),
            ),
            svc(
                json!({"metadata": {"name": "kubia-pet", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}),
            ),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "api.example.com"}})),
        ];
        let slices = vec![serde_json::from_value(json!({
            "metadata": {"name": "kubia-pet-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubia-pet"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.88.0.5"], "hostname": "kubia-pet-0", "conditions": {"ready": true}},
                {"addresses": ["10.88.0.6"], "conditions": {"ready": true}},
                {"addresses": ["10.88.0.7"], "conditions": {"ready": false}}]}))
        .unwrap()];
        (services, slices)
    }

    fn index() -> Index {
        let (s, e) = objects();
        Index::build(
            "cluster.local",
            &s.iter().collect::<Vec<_>>(),
            &e.iter().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn cluster_ip_services_have_a_srv_and_ptr() {
        let idx = index();
        assert_eq!(
            idx.lookup("kubia.default.svc.cluster.local."),
            Some(vec![Rec::A("10.96.0.20".parse().unwrap())])
        );
        assert_eq!(
            idx.lookup("_http._tcp.kubia.default.svc.cluster.local."),
            Some(vec![Rec::Srv {
                port: 80,
                target: "kubia.default.svc.cluster.local.".into()
            }])
        );
        assert_eq!(
            idx.lookup("20.0.96.10.in-addr.arpa."),
            Some(vec![Rec::Ptr("kubia.default.svc.cluster.local.".into())])
        );
        assert!(
            idx.lookup("_9000._tcp.kubia.default.svc.cluster.local.")
                .is_none(),
            "unnamed ports have no SRV"
        );
    }

    #[test]
    fn headless_services_list_ready_endpoints_with_their_names() {
        let idx = index();
        let a = idx.lookup("kubia-pet.default.svc.cluster.local.").unwrap();
        assert_eq!(a.len(), 2, "the not-ready endpoint is left out: {a:?}");
        assert_eq!(
            idx.lookup("kubia-pet-0.kubia-pet.default.svc.cluster.local."),
            Some(vec![Rec::A("10.88.0.5".parse().unwrap())])
        );
        assert!(idx
            .lookup("10-88-0-6.kubia-pet.default.svc.cluster.local.")
            .is_some());
        let srv = idx
            .lookup("_http._tcp.kubia-pet.default.svc.cluster.local.")
            .unwrap();
        assert!(srv.contains(&Rec::Srv {
            port: 8080,
            target: "kubia-pet-0.kubia-pet.default.svc.cluster.local.".into()
        }));
        assert_eq!(srv.len(), 2);
        assert_eq!(
            idx.lookup("5.0.88.10.in-addr.arpa."),
            Some(vec![Rec::Ptr(
                "kubia-pet-0.kubia-pet.default.svc.cluster.local.".into()
            )])
        );
    }

    #[test]
    fn external_names_pods_version_and_missing_names() {
        let idx = index();
        assert_eq!(
            idx.lookup("ext.default.svc.cluster.local."),
            Some(vec![Rec::Cname("api.example.com.".into())])
        );
        assert_eq!(
            idx.lookup("10-88-0-9.default.pod.cluster.local."),
            Some(vec![Rec::A("10.88.0.9".parse().unwrap())])
        );
        assert_eq!(idx.lookup("nonsense.default.pod.cluster.local."), None);
        assert_eq!(
            idx.lookup("dns-version.cluster.local."),
            Some(vec![Rec::Txt("1.1.0".into())])
        );
        assert_eq!(
            idx.lookup("default.svc.cluster.local."),
            Some(vec![]),
            "empty non-terminal"
        );
        assert_eq!(idx.lookup("svc.cluster.local."), Some(vec![]));
        assert_eq!(idx.lookup("nope.default.svc.cluster.local."), None);
        assert!(idx.in_domain("x.cluster.local.") && !idx.in_domain("example.com."));
        assert_eq!(
            absolute("Kubia.Default.SVC.cluster.local"),
            "kubia.default.svc.cluster.local."
        );
    }
}
