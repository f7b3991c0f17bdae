//! kennel's built-in load balancer (like k3s' servicelb): a `LoadBalancer`
//! Service is served on the node IPs, which are written to its
//! `status.loadBalancer.ingress` through the status subresource.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

/// Writing a Service's load-balancer status failed.
#[derive(Debug, thiserror::Error)]
pub enum LbStatusError {
    /// The API server refused the status patch.
    #[error("patch status of service {service}")]
    Patch {
        /// `namespace/name`.
        service: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The ingress list kennel wants on `svc`, or None if it is not ours to
/// write (not `type: LoadBalancer`, or another `loadBalancerClass`), or is
/// already right.
pub fn wanted_ingress(svc: &Service, node_ips: &[Ipv4Addr]) -> Option<Vec<String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    let want: Vec<String> = node_ips.iter().map(|ip| ip.to_string()).collect();
    let have: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    (have != want).then_some(want)
}

/// Brings every LoadBalancer Service's ingress to the node IPs. Returns how
/// many were patched; stops at the first error (retried next sync).
pub async fn reconcile(
    client: &Client,
    services: &[Service],
    node_ips: &[Ipv4Addr],
) -> Result<usize, LbStatusError> {
    let mut patched = 0;
    for svc in services {
        let Some(want) = wanted_ingress(svc, node_ips) else {
            continue;
        };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ingress: Vec<serde_json::Value> = want
            .iter()
            .map(|ip| serde_json::json!({ "ip": ip, "ipMode": "VIP" }))
            .collect();
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        Api::<Service>::namespaced(client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| LbStatusError::Patch {
                service: format!("{ns}/{name}"),
                source,
            })?;
        tracing::info!(service = %format!("{ns}/{name}"), ?want, "load-balancer ingress set");
        patched += 1;
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_our_load_balancers_and_only_when_different() {
        let ips = [Ipv4Addr::new(192, 0, 2, 1)];
        let lb =
            svc(serde_json::json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer"}}));
        assert_eq!(
            wanted_ingress(&lb, &ips),
            Some(vec!["192.0.2.1".to_string()])
        );
        let done = svc(
            serde_json::json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}),
        );
        assert_eq!(wanted_ingress(&done, &ips), None);
        let other = svc(serde_json::json!({"metadata": {"name": "a"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}}));
        assert_eq!(wanted_ingress(&other, &ips), None);
        let np = svc(serde_json::json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort"}}));
        assert_eq!(wanted_ingress(&np, &ips), None);
    }
}
