//! What `kennel up` keeps in the cluster for its own services: the endpoints of
//! `default/kubernetes`, the API server's address as pods reach it (upstream's API server writes
//! them itself; here the API server knows only its listen address, `kennel up` knows the node's).
//! Written as Endpoints (labelled `endpointslice.kubernetes.io/skip-mirror`) and as an
//! EndpointSlice managed by `kennel`, re-checked every minute so a deleted object comes back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// Manager label value of the slices written here.
const MANAGER: &str = "kennel";

/// The addresses the addons point at.
#[derive(Debug, Clone)]
pub struct AddonSpec {
    /// The API server as pods reach it.
    pub api_endpoint: SocketAddr,
}

/// The address pods use for the API server: the listen address, or the node's when the API
/// server listens on every address.
pub fn api_endpoint(listen: SocketAddr, node_ip: &str) -> SocketAddr {
    match listen.ip() {
        ip if !ip.is_unspecified() => listen,
        _ => match node_ip.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, listen.port()),
            Err(_) => listen,
        },
    }
}

/// Keeps the addons in place until the future is dropped.
pub async fn run(client: Client, spec: AddonSpec) -> Result<(), String> {
    loop {
        if let Err(e) = ensure(&client, &spec).await {
            tracing::warn!("cluster addons: {e:#}");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Writes the addons once.
pub async fn ensure(client: &Client, spec: &AddonSpec) -> anyhow::Result<()> {
    let api_ports = [("https", spec.api_endpoint.port(), "TCP")];
    ensure_endpoints(
        client,
        "default",
        "kubernetes",
        spec.api_endpoint.ip(),
        &api_ports,
    )
    .await
}

fn endpoints(ns: &str, name: &str, ip: IpAddr, ports: &[(&str, u16, &str)]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{
            "addresses": [{"ip": ip.to_string()}],
            "ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>(),
        }],
    })
}

fn endpoint_slice(ns: &str, name: &str, ip: IpAddr, ports: &[(&str, u16, &str)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {
            "kubernetes.io/service-name": name,
            "endpointslice.kubernetes.io/managed-by": MANAGER}},
        "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>(),
    })
}

/// Creates the object, or replaces it when its content differs from `want`.
async fn put<K>(
    api: &Api<K>,
    name: &str,
    want: Value,
    same: impl Fn(&K, &K) -> bool,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut obj: K = serde_json::from_value(want)?;
    match api.get_opt(name).await? {
        None => match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        },
        Some(have) if same(&have, &obj) => Ok(()),
        Some(have) => {
            obj.meta_mut().resource_version = have.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &obj).await?;
            Ok(())
        }
    }
}

async fn ensure_endpoints(
    client: &Client,
    ns: &str,
    name: &str,
    ip: IpAddr,
    ports: &[(&str, u16, &str)],
) -> anyhow::Result<()> {
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    put(&eps, name, endpoints(ns, name, ip, ports), |a, b| {
        a.subsets == b.subsets && a.metadata.labels == b.metadata.labels
    })
    .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    put(
        &slices,
        name,
        endpoint_slice(ns, name, ip, ports),
        |a, b| {
            a.endpoints == b.endpoints
                && a.ports == b.ports
                && a.metadata.labels == b.metadata.labels
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_endpoint_prefers_the_listen_address() {
        let l: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        assert_eq!(api_endpoint(l, "10.0.0.5"), l);
        let any: SocketAddr = "0.0.0.0:6443".parse().unwrap();
        assert_eq!(
            api_endpoint(any, "10.0.0.5"),
            "10.0.0.5:6443".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn objects_parse_as_their_types() {
        let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 88, 0, 1));
        let ports = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")];
        let e: Endpoints =
            serde_json::from_value(endpoints("kube-system", "kube-dns", ip, &ports)).unwrap();
        assert_eq!(e.subsets.unwrap()[0].ports.as_ref().unwrap().len(), 2);
        let s: EndpointSlice =
            serde_json::from_value(endpoint_slice("kube-system", "kube-dns", ip, &ports)).unwrap();
        assert_eq!(s.endpoints[0].addresses, vec!["10.88.0.1".to_string()]);
    }
}
