//! The EndpointSlice mirroring controller: hand-made Endpoints of a Service without a selector
//! (the book's `external-service`) become EndpointSlices (`managed-by:
//! endpointslicemirroring-controller.k8s.io`, owned by the Endpoints), so the proxy and DNS,
//! which read only slices, serve them. Endpoints labelled `endpointslice.kubernetes.io/
//! skip-mirror: "true"` (the `kubernetes` Service's), those of Services with a selector and
//! those without a Service are not mirrored; their mirrored slices are removed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use super::compute::{ports_key, MAX_PER_SLICE};
use super::write::{self, SliceSet};
use super::EndpointsError;
use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::Change;

/// `endpointslice.kubernetes.io/managed-by` of mirrored slices.
pub const MIRROR_MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// The label that opts Endpoints out of mirroring.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Whether `ep` is mirrored, given its Service.
pub fn mirrored(ep: &Endpoints, svc: Option<&Service>) -> bool {
    let Some(svc) = svc else { return false };
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    !has_selector && ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true")
}

fn endpoint(a: &EndpointAddress, ready: bool) -> Option<Endpoint> {
    a.ip.parse::<Ipv4Addr>().ok()?;
    Some(Endpoint {
        addresses: vec![a.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        hostname: a.hostname.clone(),
        node_name: a.node_name.clone(),
        target_ref: a.target_ref.clone(),
        ..Default::default()
    })
}

/// The slices' (ports, endpoints) groups for `ep`: one group per distinct port set, ready
/// addresses then not-ready ones, IPv4 only, at most [`MAX_PER_SLICE`] per slice.
pub fn desired(ep: &Endpoints) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let group = groups
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new()));
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (a, r) in ready.chain(not_ready) {
            if let Some(e) = endpoint(a, r) {
                if !group.1.iter().any(|x| x.addresses == e.addresses) {
                    group.1.push(e);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (_, (ports, endpoints)) in groups {
        if endpoints.is_empty() {
            continue;
        }
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    out
}

fn owner(ep: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: ep.name_any(),
        uid: ep.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Mirrors one Endpoints object.
pub async fn reconcile(ep: Arc<Endpoints>, ctx: Arc<Ctx>) -> Result<Action, EndpointsError> {
    let ns = ep.namespace().unwrap_or_default();
    let svc = ctx.services.get(&ns, &ep.name_any());
    let want = if mirrored(&ep, svc.as_deref()) && ep.metadata.deletion_timestamp.is_none() {
        desired(&ep)
    } else {
        Vec::new()
    };
    let set = SliceSet {
        ns,
        service: ep.name_any(),
        owner: owner(&ep),
        labels: write::slice_labels(ep.labels(), &ep.name_any(), MIRROR_MANAGED_BY),
        managed_by: MIRROR_MANAGED_BY,
    };
    write::sync_slices(&set, want, &ctx).await?;
    ctx.limiter.forget(&key(&*ep));
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Runs the mirroring controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    // Slices mirrored from deleted Endpoints go with them.
    let gc = ctx.clone();
    ctx.endpoints.on_change(move |c| {
        if let Change::Deleted(ep) = c {
            let ep = ep.clone();
            let ctx = gc.clone();
            tokio::spawn(async move {
                let set = SliceSet {
                    ns: ep.namespace().unwrap_or_default(),
                    service: ep.name_any(),
                    owner: owner(&ep),
                    labels: BTreeMap::new(),
                    managed_by: MIRROR_MANAGED_BY,
                };
                if let Err(e) = write::sync_slices(&set, Vec::new(), &ctx).await {
                    tracing::debug!("removing mirrored slices of {}: {e}", ep.name_any());
                }
            });
        }
    });
    let ctrl = Controller::for_stream(ctx.endpoints.applied(), ctx.endpoints.store())
        .watches_stream(ctx.services.touched(), |s: Service| {
            Some(ObjectRef::new(&s.name_any()).within(&s.namespace().unwrap_or_default()))
        })
        .watches_stream(ctx.endpoint_slices.touched(), |s| {
            let owner = s
                .owner_references()
                .iter()
                .find(|o| o.kind == "Endpoints")?
                .name
                .clone();
            Some(ObjectRef::new(&owner).within(&s.namespace().unwrap_or_default()))
        });
    async move {
        ctx.ready().await;
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ep(v: serde_json::Value) -> Endpoints {
        serde_json::from_value(v).unwrap()
    }

    fn svc(selector: Option<serde_json::Value>) -> Service {
        let mut spec = json!({"ports": [{"port": 80}]});
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        serde_json::from_value(json!({"metadata": {"name": "external-service"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn mirrors_only_selectorless_services_not_opted_out() {
        let e = ep(json!({"metadata": {"name": "external-service"}}));
        assert!(mirrored(&e, Some(&svc(None))));
        assert!(mirrored(&e, Some(&svc(Some(json!({}))))));
        assert!(!mirrored(&e, Some(&svc(Some(json!({"app": "kubia"}))))));
        assert!(!mirrored(&e, None));
        let skip = ep(json!({"metadata": {"name": "kubernetes",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}}));
        assert!(!mirrored(&skip, Some(&svc(None))));
    }

    #[test]
    fn the_books_external_service() {
        // Kubernetes in Action, listing 5.11: two external addresses on port 80.
        let e = ep(
            json!({"metadata": {"name": "external-service"}, "subsets": [
                {"addresses": [{"ip": "11.11.11.11"}, {"ip": "22.22.22.22"}], "ports": [{"port": 80}]},
                {"addresses": [{"ip": "33.33.33.33"}], "notReadyAddresses": [{"ip": "44.44.44.44"}, {"ip": "fd00::1"}],
                 "ports": [{"port": 80, "protocol": "TCP"}]},
                {"addresses": [{"ip": "55.55.55.55"}], "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
                {"ports": [{"port": 9}]},
            ]}),
        );
        let d = desired(&e);
        assert_eq!(d.len(), 2, "{d:?}");
        let http = d.iter().find(|(p, _)| p[0].port == Some(80)).unwrap();
        let ips: Vec<(&str, bool)> = http
            .1
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ips,
            [
                ("11.11.11.11", true),
                ("22.22.22.22", true),
                ("33.33.33.33", true),
                ("44.44.44.44", false)
            ]
        );
        assert_eq!(http.0[0].protocol.as_deref(), Some("TCP"));
        let dns = d.iter().find(|(p, _)| p[0].port == Some(53)).unwrap();
        assert_eq!(dns.0[0].name.as_deref(), Some("dns"));
        assert_eq!(dns.1.len(), 1);
    }

    #[test]
    fn large_subsets_split_into_slices() {
        let addrs: Vec<_> = (0..250)
            .map(|i| json!({"ip": format!("10.1.{}.{}", i / 200, i % 200)}))
            .collect();
        let e = ep(
            json!({"metadata": {"name": "x"}, "subsets": [{"addresses": addrs, "ports": [{"port": 80}]}]}),
        );
        let sizes: Vec<usize> = desired(&e).iter().map(|(_, e)| e.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
    }
}
