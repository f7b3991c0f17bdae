//! Ingress backends → endpoints, pure: `service.name` + `service.port` (number or name) is
//! resolved to the Service's port, then to the ready endpoints of the Service's EndpointSlices
//! (label `kubernetes.io/service-name`), the endpoint port matched by the Service port's name.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressServiceBackend;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A backend could not be resolved to endpoints (it answers 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// `service.port` names neither a number nor a name.
    #[error("backend service {0} has no port")]
    NoPort(String),
    /// No such Service.
    #[error("service {0} not found")]
    ServiceNotFound(String),
    /// The Service has no such port.
    #[error("service {service} has no port {port}")]
    PortNotFound {
        /// `namespace/name`.
        service: String,
        /// The port as the Ingress names it.
        port: String,
    },
    /// `type: ExternalName` Services have no endpoints to proxy to.
    #[error("service {0} is of type ExternalName (not supported)")]
    ExternalName(String),
}

/// One backend: its endpoints and a round-robin cursor.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs and error pages.
    pub name: String,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    /// A backend over `endpoints` (empty: every request gets 503).
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Self {
        Backend {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint, round-robin; None without endpoints.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[i % self.endpoints.len()])
    }
}

/// Services and EndpointSlices by namespace and name, for resolving backends.
pub struct ServiceIndex<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

/// The name a backend is known by: `namespace/service:port`.
pub fn backend_key(ns: &str, b: &IngressServiceBackend) -> String {
    let port = b
        .port
        .as_ref()
        .and_then(|p| {
            p.number
                .filter(|n| *n != 0)
                .map(|n| n.to_string())
                .or_else(|| p.name.clone())
        })
        .unwrap_or_default();
    format!("{ns}/{}:{port}", b.name)
}

impl<'a> ServiceIndex<'a> {
    /// Indexes `services` and `slices`.
    pub fn new(services: &[&'a Service], slices: &[&'a EndpointSlice]) -> Self {
        let mut by_name = HashMap::new();
        for s in services {
            if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                by_name.insert((ns.as_str(), n.as_str()), *s);
            }
        }
        let mut by_svc: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for sl in slices {
            let svc = sl
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(svc)) = (&sl.metadata.namespace, svc) {
                by_svc
                    .entry((ns.as_str(), svc.as_str()))
                    .or_default()
                    .push(*sl);
            }
        }
        ServiceIndex {
            services: by_name,
            slices: by_svc,
        }
    }

    /// The ready endpoints of backend `b` of an Ingress in namespace `ns`.
    pub fn resolve(
        &self,
        ns: &str,
        b: &IngressServiceBackend,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let svc_name = format!("{ns}/{}", b.name);
        let port = b.port.as_ref();
        let number = port.and_then(|p| p.number).filter(|n| *n != 0);
        let name = port
            .and_then(|p| p.name.as_deref())
            .filter(|n| !n.is_empty());
        if number.is_none() && name.is_none() {
            return Err(BackendError::NoPort(svc_name));
        }
        let svc = self
            .services
            .get(&(ns, b.name.as_str()))
            .ok_or_else(|| BackendError::ServiceNotFound(svc_name.clone()))?;
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(BackendError::ExternalName(svc_name));
        }
        let svc_port = spec
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| {
                ports.iter().find(|p| match (number, name) {
                    (Some(n), _) => p.port == n,
                    (None, Some(name)) => p.name.as_deref() == Some(name),
                    (None, None) => false,
                })
            })
            .ok_or_else(|| BackendError::PortNotFound {
                service: svc_name.clone(),
                port: number
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| name.unwrap_or_default().to_string()),
            })?;
        let port_name = svc_port.name.as_deref().unwrap_or("");
        let mut out = BTreeSet::new();
        for sl in self
            .slices
            .get(&(ns, b.name.as_str()))
            .into_iter()
            .flatten()
        {
            if !matches!(sl.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let Some(p) = sl
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            else {
                continue;
            };
            for ep in &sl.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                let ip = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok());
                if let (true, Some(ip)) = (ready, ip) {
                    out.insert(SocketAddr::new(ip, p));
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }
    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }
    fn backend(name: &str, port: serde_json::Value) -> IngressServiceBackend {
        serde_json::from_value(json!({"name": name, "port": port})).unwrap()
    }

    #[test]
    fn resolves_by_number_and_name_to_ready_endpoints() {
        let s = svc(json!({"metadata": {"namespace": "d", "name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                               {"name": "admin", "port": 9000}]}}));
        let a = slice(json!({"metadata": {"namespace": "d", "name": "web-a",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9001}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                          {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                          {"addresses": ["10.0.0.3"]}]}));
        let b = slice(json!({"metadata": {"namespace": "d", "name": "web-b",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8081}],
            "endpoints": [{"addresses": ["10.0.0.4"]}]}));
        let other_ns = slice(json!({"metadata": {"namespace": "x", "name": "web",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 1}],
            "endpoints": [{"addresses": ["10.9.9.9"]}]}));
        let idx = ServiceIndex::new(&[&s], &[&a, &b, &other_ns]);
        let eps = idx
            .resolve("d", &backend("web", json!({"number": 80})))
            .unwrap();
        let want: Vec<SocketAddr> = ["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.4:8081"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(eps, want);
        let eps = idx
            .resolve("d", &backend("web", json!({"name": "admin"})))
            .unwrap();
        assert_eq!(
            eps,
            vec![
                "10.0.0.1:9001".parse().unwrap(),
                "10.0.0.3:9001".parse().unwrap()
            ]
        );

        assert_eq!(
            idx.resolve("d", &backend("web", json!({"number": 81}))),
            Err(BackendError::PortNotFound {
                service: "d/web".into(),
                port: "81".into()
            })
        );
        assert_eq!(
            idx.resolve("d", &backend("nope", json!({"number": 80}))),
            Err(BackendError::ServiceNotFound("d/nope".into()))
        );
        assert_eq!(
            idx.resolve("d", &backend("web", json!({}))),
            Err(BackendError::NoPort("d/web".into()))
        );
    }

    #[test]
    fn unnamed_ports_and_round_robin() {
        let s = svc(json!({"metadata": {"namespace": "d", "name": "one"},
            "spec": {"ports": [{"port": 80}]}}));
        let sl = slice(json!({"metadata": {"namespace": "d", "name": "one-x",
                "labels": {"kubernetes.io/service-name": "one"}},
            "addressType": "IPv4", "ports": [{"port": 7000}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}));
        let idx = ServiceIndex::new(&[&s], &[&sl]);
        let eps = idx
            .resolve("d", &backend("one", json!({"number": 80})))
            .unwrap();
        let b = Backend::new("d/one:80", eps);
        let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap().to_string()).collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:7000",
                "10.0.0.2:7000",
                "10.0.0.1:7000",
                "10.0.0.2:7000"
            ]
        );
        assert_eq!(Backend::new("none", vec![]).pick(), None);
    }
}
