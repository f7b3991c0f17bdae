//! Writing a Service's desired slices and Endpoints, touching only what differs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::ResourceExt;

use super::compute::{self, PodEndpoint};
use super::{EndpointsError, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME};
use crate::ctx::Ctx;

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `labels` (minus the reserved ones) plus the slice labels.
pub fn slice_labels(
    labels: &BTreeMap<String, String>,
    service: &str,
    managed_by: &str,
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| *k != SERVICE_NAME && *k != MANAGED_BY_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(SERVICE_NAME.into(), service.to_string());
    l.insert(MANAGED_BY_LABEL.into(), managed_by.to_string());
    l
}

fn same_ports(a: &[EndpointPort], b: &[EndpointPort]) -> bool {
    let norm = |v: &[EndpointPort]| {
        let mut v: Vec<(String, String, i32)> = v
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.port.unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

fn err(what: &'static str, ns: &str, name: &str, source: kube::Error) -> EndpointsError {
    EndpointsError::Write {
        what,
        ns: ns.into(),
        name: name.into(),
        source,
    }
}

/// A set of slices one owner manages for one Service.
pub struct SliceSet {
    /// Namespace.
    pub ns: String,
    /// The Service (slice names start with it).
    pub service: String,
    /// The owner of the slices (the Service, or for mirrored slices the Endpoints).
    pub owner: OwnerReference,
    /// Labels of every slice (with the service-name and managed-by labels).
    pub labels: BTreeMap<String, String>,
    /// The manager (`endpointslice.kubernetes.io/managed-by`).
    pub managed_by: &'static str,
}

/// Creates, updates and deletes the Service's slices.
pub async fn slices(svc: &Service, eps: &[PodEndpoint], ctx: &Ctx) -> Result<(), EndpointsError> {
    let set = SliceSet {
        ns: svc.namespace().unwrap_or_default(),
        service: svc.name_any(),
        owner: owner(svc),
        labels: slice_labels(svc.labels(), &svc.name_any(), MANAGED_BY),
        managed_by: MANAGED_BY,
    };
    sync_slices(&set, compute::desired_slices(eps), ctx).await
}

/// Makes the slices of `set` the `desired` (ports, endpoints) groups, touching only what
/// differs.
pub async fn sync_slices(
    set: &SliceSet,
    desired: Vec<(Vec<EndpointPort>, Vec<Endpoint>)>,
    ctx: &Ctx,
) -> Result<(), EndpointsError> {
    let ns = &set.ns;
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let mut existing: Vec<_> = ctx
        .endpoint_slices
        .owned_by(&set.owner.uid)
        .into_iter()
        .filter(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(set.managed_by))
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let labels = &set.labels;
    let mut created = Vec::new();
    for (ports, endpoints) in desired {
        let reuse = existing
            .iter()
            .position(|s| same_ports(s.ports.as_deref().unwrap_or_default(), &ports));
        let ports = (!ports.is_empty()).then_some(ports);
        match reuse {
            Some(i) => {
                let have = existing.remove(i);
                if have.endpoints == endpoints
                    && have.ports == ports
                    && have.metadata.labels.as_ref() == Some(labels)
                {
                    continue;
                }
                let mut s = (*have).clone();
                s.endpoints = endpoints;
                s.ports = ports;
                s.metadata.labels = Some(labels.clone());
                api.replace(&have.name_any(), &PostParams::default(), &s)
                    .await
                    .map_err(|e| err("update endpointslice", ns, &have.name_any(), e))?;
            }
            None => {
                let s = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", set.service)),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![set.owner.clone()]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints,
                    ports,
                };
                let made = api
                    .create(&PostParams::default(), &s)
                    .await
                    .map_err(|e| err("create endpointslice", ns, &set.service, e))?;
                created.push(made.name_any());
            }
        }
    }
    for stale in existing {
        match api
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(err("delete endpointslice", ns, &stale.name_any(), e)),
        }
    }
    // Until the informer has seen what was created, a next pass would create it again.
    for name in created {
        for _ in 0..50 {
            if ctx.endpoint_slices.get(ns, &name).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Creates or updates the Service's Endpoints.
pub async fn endpoints(
    svc: &Service,
    eps: &[PodEndpoint],
    ctx: &Ctx,
) -> Result<(), EndpointsError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let subsets = compute::desired_subsets(eps);
    let labels = svc.metadata.labels.clone();
    match ctx.endpoints.get(&ns, &name) {
        Some(have) => {
            if have.subsets.clone().unwrap_or_default() == subsets && have.metadata.labels == labels
            {
                return Ok(());
            }
            let mut e = (*have).clone();
            e.subsets = Some(subsets);
            e.metadata.labels = labels;
            api.replace(&name, &PostParams::default(), &e)
                .await
                .map_err(|e| err("update endpoints", &ns, &name, e))?;
        }
        None => {
            let e = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels,
                    ..Default::default()
                },
                subsets: Some(subsets),
            };
            match api.create(&PostParams::default(), &e).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(err("create endpoints", &ns, &name, e)),
            }
        }
    }
    Ok(())
}
