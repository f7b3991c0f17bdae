//! Writing a Service's desired slices and Endpoints, touching only what differs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
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

/// The Service's labels (minus the reserved ones) plus the slice labels.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = svc
        .labels()
        .iter()
        .filter(|(k, _)| *k != SERVICE_NAME && *k != MANAGED_BY_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(SERVICE_NAME.into(), svc.name_any());
    l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
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

/// Creates, updates and deletes the Service's slices.
pub async fn slices(svc: &Service, eps: &[PodEndpoint], ctx: &Ctx) -> Result<(), EndpointsError> {
    let ns = svc.namespace().unwrap_or_default();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut existing: Vec<_> = ctx
        .endpoint_slices
        .owned_by(&uid)
        .into_iter()
        .filter(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let labels = slice_labels(svc);
    let mut created = Vec::new();
    for (ports, endpoints) in compute::desired_slices(eps) {
        let reuse = existing
            .iter()
            .position(|s| same_ports(s.ports.as_deref().unwrap_or_default(), &ports));
        let ports = (!ports.is_empty()).then_some(ports);
        match reuse {
            Some(i) => {
                let have = existing.remove(i);
                if have.endpoints == endpoints
                    && have.ports == ports
                    && have.metadata.labels.as_ref() == Some(&labels)
                {
                    continue;
                }
                let mut s = (*have).clone();
                s.endpoints = endpoints;
                s.ports = ports;
                s.metadata.labels = Some(labels.clone());
                api.replace(&have.name_any(), &PostParams::default(), &s)
                    .await
                    .map_err(|e| err("update endpointslice", &ns, &have.name_any(), e))?;
            }
            None => {
                let s = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", svc.name_any())),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![owner(svc)]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints,
                    ports,
                };
                let made = api
                    .create(&PostParams::default(), &s)
                    .await
                    .map_err(|e| err("create endpointslice", &ns, &svc.name_any(), e))?;
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
            Err(e) => return Err(err("delete endpointslice", &ns, &stale.name_any(), e)),
        }
    }
    // Until the informer has seen what was created, a next pass would create it again.
    for name in created {
        for _ in 0..50 {
            if ctx.endpoint_slices.get(&ns, &name).is_some() {
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
