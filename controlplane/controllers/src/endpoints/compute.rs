//! What a selector Service's endpoints should be, from its pods (pure): the EndpointSlices
//! (endpoints grouped by their resolved port set, at most [`MAX_PER_SLICE`] per slice) and the
//! core/v1 Endpoints subsets, with upstream's conditions.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::podutil;
use crate::selector::Selector;

/// Upstream's `--max-endpoints-per-slice` default.
pub const MAX_PER_SLICE: usize = 100;

/// One pod as an endpoint of the Service.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    /// The Service's ports resolved against this pod (named target ports looked up in its
    /// containers); the grouping key of slices.
    pub ports: Vec<EndpointPort>,
    /// The slice endpoint.
    pub endpoint: Endpoint,
    /// Ready for the Endpoints object (addresses vs notReadyAddresses).
    pub ready: bool,
    /// Terminating pods are left out of the Endpoints object (slices keep them).
    pub terminating: bool,
}

/// Whether the Service's endpoints are managed by these controllers: it has a selector and is
/// not an ExternalName.
pub fn managed(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// The Service's selector.
pub fn selector(svc: &Service) -> Selector {
    Selector::from_map(
        &svc.spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default(),
    )
}

/// The container port named `name` with `protocol` in `pod`.
fn named_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// The Service's ports resolved for `pod`; a port whose named target the pod lacks is left out.
pub fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = match &sp.target_port {
                None => sp.port,
                Some(IntOrString::Int(0)) => sp.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => n,
                    Err(_) => named_port(pod, s, &protocol)?,
                },
            };
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// `pod` as an endpoint of `svc`, or None when it is not one (no IP yet, finished, not selected).
pub fn pod_endpoint(
    svc: &Service,
    pod: &Pod,
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let svc_spec = svc.spec.as_ref()?;
    let publish = svc_spec.publish_not_ready_addresses == Some(true);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let pod_ready = podutil::is_ready(pod);
    let ready = publish || (pod_ready && !terminating);
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let hostname = match (&spec.hostname, &spec.subdomain) {
        (Some(h), Some(sub)) if *sub == svc_name && !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    let node = spec.node_name.clone();
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(pod_ready),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: node.clone(),
        zone: node.as_deref().and_then(zone_of),
        target_ref: Some(pod_ref(pod)),
        ..Default::default()
    };
    Some(PodEndpoint {
        ports: resolve_ports(svc, pod),
        endpoint,
        ready,
        terminating: terminating && !publish,
    })
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The endpoints of `svc` among `pods` (every pod of its namespace), sorted by address.
pub fn endpoints_of(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<PodEndpoint> {
    let sel = selector(svc);
    let mut out: Vec<PodEndpoint> = pods
        .iter()
        .filter(|p| sel.matches(&p.metadata.labels.clone().unwrap_or_default()))
        .filter_map(|p| pod_endpoint(svc, p, zone_of))
        .collect();
    out.sort_by(|a, b| a.endpoint.addresses.cmp(&b.endpoint.addresses));
    out
}

/// A port set as a map key.
pub fn ports_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.protocol.as_deref().unwrap_or(""),
                p.port.unwrap_or(0)
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// The desired slices: (ports, endpoints) per port set, at most [`MAX_PER_SLICE`] endpoints
/// each; one empty slice (no ports, no endpoints) when there is no endpoint, as upstream's
/// placeholder.
pub fn desired_slices(eps: &[PodEndpoint]) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for e in eps {
        groups
            .entry(ports_key(&e.ports))
            .or_insert_with(|| (e.ports.clone(), Vec::new()))
            .1
            .push(e.endpoint.clone());
    }
    let mut out = Vec::new();
    for (_, (ports, endpoints)) in groups {
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        out.push((Vec::new(), Vec::new()));
    }
    out
}

/// The core/v1 Endpoints subsets (terminating pods left out, as upstream's Endpoints controller).
pub fn desired_subsets(eps: &[PodEndpoint]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for e in eps.iter().filter(|e| !e.terminating && !e.ports.is_empty()) {
        let subset = groups
            .entry(ports_key(&e.ports))
            .or_insert_with(|| EndpointSubset {
                ports: Some(
                    e.ports
                        .iter()
                        .map(|p| CorePort {
                            name: p.name.clone().filter(|n| !n.is_empty()),
                            port: p.port.unwrap_or(0),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                ),
                ..Default::default()
            });
        let addr = EndpointAddress {
            ip: e.endpoint.addresses[0].clone(),
            hostname: e.endpoint.hostname.clone(),
            node_name: e.endpoint.node_name.clone(),
            target_ref: e.endpoint.target_ref.clone(),
        };
        let list = if e.ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(addr);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(extra: serde_json::Value) -> Service {
        let mut s = json!({"metadata": {"name": "kubia", "namespace": "default"},
            "spec": {"selector": {"app": "kubia"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9000, "targetPort": 9090}]}});
        if let (Some(spec), Some(e)) = (s["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(e.clone());
        }
        serde_json::from_value(s).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "kubia"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let (Some(m), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if let (Some(dst), Some(src)) =
                    (m.get_mut(k).and_then(|x| x.as_object_mut()), v.as_object())
                {
                    dst.extend(src.clone());
                }
            }
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn no_zone(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let cases = [
            // (ready, terminating, publishNotReady) → (ready, serving, terminating, in Endpoints addresses)
            (true, false, false, (true, true, false, Some(true))),
            (false, false, false, (false, false, false, Some(false))),
            (true, true, false, (false, true, true, None)),
            (false, false, true, (true, false, false, Some(true))),
        ];
        for (ready, term, publish, want) in cases {
            let s = svc(json!({"publishNotReadyAddresses": publish}));
            let extra = if term {
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
            } else {
                json!({})
            };
            let p = pod("a", "10.0.0.1", ready, extra);
            let e = pod_endpoint(&s, &p, &no_zone).unwrap();
            let c = e.endpoint.conditions.clone().unwrap();
            assert_eq!(
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap()),
                (want.0, want.1, want.2),
                "{ready} {term} {publish}"
            );
            let subsets = desired_subsets(&[e]);
            let got = subsets.first().map(|s| s.addresses.is_some());
            assert_eq!(got, want.3, "{ready} {term} {publish}");
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let s = svc(json!({}));
        let with = pod("a", "10.0.0.1", true, json!({}));
        let ports = resolve_ports(&s, &with);
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
                .collect::<Vec<_>>(),
            vec![("http".into(), 8080), ("metrics".into(), 9090)]
        );
        let without: Pod = serde_json::from_value(json!({"metadata": {"name": "b"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
        let ports = resolve_ports(&s, &without);
        assert_eq!(
            ports.len(),
            1,
            "the named port is missing: only the numeric one"
        );
        let slices = desired_slices(&[
            pod_endpoint(&s, &with, &no_zone).unwrap(),
            PodEndpoint {
                ports,
                ..pod_endpoint(&s, &pod("b", "10.0.0.2", true, json!({})), &no_zone).unwrap()
            },
        ]);
        assert_eq!(slices.len(), 2, "two port sets, two slices");
    }

    #[test]
    fn slices_hold_at_most_a_hundred() {
        let s = svc(json!({}));
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    true,
                    json!({}),
                )
            })
            .collect();
        let eps = endpoints_of(&s, &pods, &no_zone);
        let slices = desired_slices(&eps);
        assert_eq!(
            slices.iter().map(|s| s.1.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        assert_eq!(desired_slices(&[]), vec![(vec![], vec![])], "placeholder");
    }

    #[test]
    fn unselected_unaddressed_and_finished_pods_are_left_out() {
        let s = svc(json!({}));
        let other = pod(
            "x",
            "10.0.0.9",
            true,
            json!({"metadata": {"labels": {"app": "other"}}}),
        );
        let no_ip = pod("y", "", true, json!({}));
        let done = pod(
            "z",
            "10.0.0.8",
            false,
            json!({"status": {"phase": "Succeeded"}}),
        );
        let good = pod("a", "10.0.0.1", true, json!({}));
        let eps = endpoints_of(&s, &[other, no_ip, done, good], &no_zone);
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].endpoint.addresses, vec!["10.0.0.1".to_string()]);
        assert_eq!(eps[0].endpoint.node_name.as_deref(), Some("n1"));
    }

    #[test]
    fn hostname_only_under_its_subdomain_service() {
        let s = svc(json!({"clusterIP": "None"}));
        let p = pod(
            "web-0",
            "10.0.0.1",
            true,
            json!({"spec": {"hostname": "web-0", "subdomain": "kubia"}}),
        );
        assert_eq!(
            pod_endpoint(&s, &p, &no_zone)
                .unwrap()
                .endpoint
                .hostname
                .as_deref(),
            Some("web-0")
        );
        let q = pod(
            "web-1",
            "10.0.0.2",
            true,
            json!({"spec": {"hostname": "web-1", "subdomain": "other"}}),
        );
        assert_eq!(
            pod_endpoint(&s, &q, &no_zone).unwrap().endpoint.hostname,
            None
        );
    }

    #[test]
    fn external_name_and_selectorless_are_not_managed() {
        assert!(managed(&svc(json!({}))));
        assert!(!managed(&svc(
            json!({"type": "ExternalName", "externalName": "x.example"})
        )));
        assert!(!managed(&svc(json!({"selector": {}}))));
    }
}
