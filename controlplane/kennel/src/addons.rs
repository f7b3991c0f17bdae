//! What `kennel up` keeps in the cluster for its own services, as k3s' bundled manifests do:
//! - `kube-system/kube-dns`: the Service whose ClusterIP pods get as their nameserver, with
//!   selector-less endpoints at the node's DNS listener (kennel-dns runs in this process, not in
//!   a pod, so nothing selects it);
//! - the endpoints of `default/kubernetes`: the API server's address as pods reach it (upstream's
//!   API server writes them itself; here only `kennel up` knows the node's address);
//! - the IngressClass `kennel` (the default class), served by the built-in Ingress controller;
//! - the StorageClass `local-disk` (the default class): `kennel.dev/local-disk`, the node's own
//!   provisioner of disk images, `WaitForFirstConsumer`, `Delete`. Created when absent, never
//!   overwritten (an administrator may change or un-default it).
//!
//! The endpoints are written as Endpoints (labelled `endpointslice.kubernetes.io/skip-mirror`)
//! and as an EndpointSlice managed by `kennel`; everything is re-checked every minute so a
//! deleted object comes back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// Manager label value of the slices written here.
const MANAGER: &str = "kennel";

/// The addresses the addons point at.
#[derive(Debug, Clone)]
pub struct AddonSpec {
    /// ClusterIP of `kube-system/kube-dns`.
    pub dns_ip: Ipv4Addr,
    /// Where kennel-dns listens (port 53 UDP and TCP).
    pub dns_endpoint: Ipv4Addr,
    /// The API server as pods reach it.
    pub api_endpoint: SocketAddr,
}

/// The cluster DNS address of a service range: its tenth address, as kubeadm picks
/// (10.96.0.0/12 → 10.96.0.10).
pub fn default_dns_ip(service_cidr: &ipnet::Ipv4Net) -> anyhow::Result<Ipv4Addr> {
    let ip = Ipv4Addr::from(u32::from(service_cidr.network()) + 10);
    anyhow::ensure!(
        service_cidr.contains(&ip),
        "--service-cidr {service_cidr} is too small for a DNS address"
    );
    Ok(ip)
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
    ensure_dns_service(client, spec.dns_ip).await?;
    let dns_ports = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")];
    ensure_endpoints(
        client,
        "kube-system",
        "kube-dns",
        IpAddr::V4(spec.dns_endpoint),
        &dns_ports,
    )
    .await?;
    let api_ports = [("https", spec.api_endpoint.port(), "TCP")];
    ensure_endpoints(
        client,
        "default",
        "kubernetes",
        spec.api_endpoint.ip(),
        &api_ports,
    )
    .await?;
    ensure_ingress_class(client).await?;
    ensure_storage_class(client).await
}

/// Name of the default StorageClass.
pub const STORAGE_CLASS: &str = "local-disk";

fn storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": kennel_node::provisioner::PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// The default StorageClass `local-disk`: created when absent, never replaced.
async fn ensure_storage_class(client: &Client) -> anyhow::Result<()> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(STORAGE_CLASS).await?.is_some() {
        return Ok(());
    }
    let class: StorageClass = serde_json::from_value(storage_class())?;
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The default IngressClass `kennel`, served by the built-in Ingress controller.
async fn ensure_ingress_class(client: &Client) -> anyhow::Result<()> {
    let class = kennel_ingress::ingress_class(&kennel_ingress::IngressConfig::new(Vec::new()));
    let api: Api<IngressClass> = Api::all(client.clone());
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn dns_service(ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {
            "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
            "kubernetes.io/name": "KubeDNS"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    })
}

async fn ensure_dns_service(client: &Client, ip: Ipv4Addr) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    if let Some(have) = api.get_opt("kube-dns").await? {
        let current = have.spec.as_ref().and_then(|s| s.cluster_ip.clone());
        if current.as_deref() == Some(ip.to_string().as_str()) {
            return Ok(());
        }
        // The ClusterIP is immutable: a changed --cluster-dns needs a new Service.
        tracing::info!("kube-dns: ClusterIP {current:?} → {ip}, recreating");
        api.delete("kube-dns", &DeleteParams::default()).await?;
        for _ in 0..50 {
            if api.get_opt("kube-dns").await?.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let svc: Service = serde_json::from_value(dns_service(ip))?;
    match api.create(&PostParams::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
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
    fn dns_ip_is_the_tenth_address() {
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
        assert_eq!(
            default_dns_ip(&net("10.96.0.0/12")).unwrap(),
            Ipv4Addr::new(10, 96, 0, 10)
        );
        assert_eq!(
            default_dns_ip(&net("10.43.0.0/16")).unwrap(),
            Ipv4Addr::new(10, 43, 0, 10)
        );
        assert!(default_dns_ip(&net("10.0.0.0/30")).is_err());
    }

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
        let ip = IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1));
        let _: Service = serde_json::from_value(dns_service(Ipv4Addr::new(10, 96, 0, 10))).unwrap();
        let ports = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")];
        let e: Endpoints =
            serde_json::from_value(endpoints("kube-system", "kube-dns", ip, &ports)).unwrap();
        assert_eq!(e.subsets.unwrap()[0].ports.as_ref().unwrap().len(), 2);
        let s: EndpointSlice =
            serde_json::from_value(endpoint_slice("kube-system", "kube-dns", ip, &ports)).unwrap();
        assert_eq!(s.endpoints[0].addresses, vec!["10.88.0.1".to_string()]);
        let c: StorageClass = serde_json::from_value(storage_class()).unwrap();
        assert_eq!(c.provisioner, "kennel.dev/local-disk");
        assert_eq!(
            c.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(c.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            c.metadata.annotations.unwrap()["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
    }
}
