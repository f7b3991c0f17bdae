//! `status.loadBalancer.ingress` of every served Ingress = the node IPs, written through the
//! status subresource only when it differs (so our own write does not start a loop).
#![forbid(unsafe_code)]

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

/// Writing an Ingress's status failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API server refused the status patch.
    #[error("patch status of ingress {ingress}")]
    Patch {
        /// `namespace/name`.
        ingress: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The addresses to write on `ing`, or None when they are already there (or there are no node
/// IPs to write).
pub fn wanted(ing: &Ingress, node_ips: &[IpAddr]) -> Option<Vec<String>> {
    if node_ips.is_empty() {
        return None;
    }
    let want: Vec<String> = node_ips.iter().map(|ip| ip.to_string()).collect();
    let have: Vec<String> = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|l| l.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    (have != want).then_some(want)
}

/// Brings the status of every Ingress in `served` to the node IPs. Returns how many were
/// patched; every failure is returned (the rest are still tried).
pub async fn reconcile(
    client: &Client,
    served: &[&Ingress],
    node_ips: &[IpAddr],
) -> (usize, Vec<StatusError>) {
    let mut patched = 0;
    let mut errors = Vec::new();
    for ing in served {
        let Some(want) = wanted(ing, node_ips) else {
            continue;
        };
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let name = ing.metadata.name.clone().unwrap_or_default();
        let list: Vec<serde_json::Value> = want
            .iter()
            .map(|ip| serde_json::json!({ "ip": ip }))
            .collect();
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": list } } });
        match Api::<Ingress>::namespaced(client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(ingress = %format!("{ns}/{name}"), ?want, "ingress address set");
                patched += 1;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {} // deleted meanwhile
            Err(source) => errors.push(StatusError::Patch {
                ingress: format!("{ns}/{name}"),
                source,
            }),
        }
    }
    (patched, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_when_different() {
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let bare: Ingress = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(wanted(&bare, &ips), Some(vec!["192.0.2.1".to_string()]));
        let done: Ingress = serde_json::from_value(serde_json::json!({
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}))
        .unwrap();
        assert_eq!(wanted(&done, &ips), None);
        assert_eq!(wanted(&bare, &[]), None);
    }
}
