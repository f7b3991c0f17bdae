//! The `pvc-protection` and `pv-protection` controllers: every live claim and volume carries its
//! finalizer (added here too, for objects created while the admission plugin was off); a
//! deleted claim keeps `kubernetes.io/pvc-protection` while a scheduled, unfinished pod uses
//! it, a deleted volume keeps `kubernetes.io/pv-protection` while it is Bound.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::{Resource, ResourceExt};

use super::util::{pod_claims, pod_terminated, volume_phase};
use super::{error_policy, VolumeError, Volumes, PVC_PROTECTION, PV_PROTECTION};
use crate::ctx::drain;

/// Whether `pod` holds the claim `name` of its namespace.
fn uses(pod: &Pod, name: &str) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    scheduled && !pod_terminated(pod) && pod_claims(pod).iter().any(|c| c == name)
}

/// The pvc-protection controller (forever); build it before the informers start.
pub fn pvc_controller(v: Arc<Volumes>) -> impl std::future::Future<Output = ()> + Send {
    let ctrl = Controller::for_stream(v.pvcs.applied(), v.pvcs.store()).watches_stream(
        v.ctx.pods.touched(),
        |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            pod_claims(&pod)
                .into_iter()
                .map(|c| ObjectRef::new(&c).within(&ns))
                .collect::<Vec<_>>()
        },
    );
    async move {
        v.ready().await;
        drain(ctrl.run(reconcile_pvc, error_policy, v).boxed()).await;
    }
}

/// The pv-protection controller (forever); build it before the informers start.
pub fn pv_controller(v: Arc<Volumes>) -> impl std::future::Future<Output = ()> + Send {
    let ctrl = Controller::for_stream(v.pvs.applied(), v.pvs.store());
    async move {
        v.ready().await;
        drain(ctrl.run(reconcile_pv, error_policy, v).boxed()).await;
    }
}

fn has_finalizer<K: Resource>(o: &K, f: &str) -> bool {
    o.meta().finalizers.iter().flatten().any(|x| x == f)
}

/// `o` with the finalizer `f` added (`add`) or removed.
fn with_finalizer<K: Resource + Clone>(o: &K, f: &str, add: bool) -> K {
    let mut n = o.clone();
    let list = n.meta_mut().finalizers.get_or_insert_with(Vec::new);
    list.retain(|x| x != f);
    if add {
        list.push(f.into());
    }
    n
}

/// Whether the finalizer must change: `Some(true)` add, `Some(false)` remove.
fn finalizer_change<K: Resource>(o: &K, f: &str, in_use: impl FnOnce() -> bool) -> Option<bool> {
    let has = has_finalizer(o, f);
    match (o.meta().deletion_timestamp.is_some(), has) {
        (false, false) => Some(true),
        (true, true) if !in_use() => Some(false),
        _ => None,
    }
}

/// Keeps a claim's protection finalizer.
pub async fn reconcile_pvc(
    c: Arc<PersistentVolumeClaim>,
    v: Arc<Volumes>,
) -> Result<Action, VolumeError> {
    let c = v.fresh_pvc.latest(c);
    let ns = c.namespace().unwrap_or_default();
    let name = c.name_any();
    let cached_use = v.ctx.pods.in_namespace(&ns).iter().any(|p| uses(p, &name));
    let Some(mut add) = finalizer_change(&*c, PVC_PROTECTION, || cached_use) else {
        return Ok(Action::await_change());
    };
    if !add {
        // The cache says unused: make sure with a live list, as upstream does.
        let pods = Api::<Pod>::namespaced(v.ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(|source| VolumeError::Api {
                what: "list pods",
                name: ns.clone(),
                source,
            })?;
        if pods.items.iter().any(|p| uses(p, &name)) {
            return Ok(Action::await_change());
        }
        add = false;
    }
    let next = with_finalizer(&*c, PVC_PROTECTION, add);
    match v
        .pvc_api(&c)
        .replace(&name, &PostParams::default(), &next)
        .await
    {
        Ok(n) => {
            if !add {
                tracing::info!(claim = %format!("{ns}/{name}"), "removed pvc-protection finalizer");
            }
            v.fresh_pvc.put(n);
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(VolumeError::Api {
                what: "update claim finalizers",
                name,
                source,
            })
        }
    }
    Ok(Action::await_change())
}

/// Keeps a volume's protection finalizer.
pub async fn reconcile_pv(
    vol: Arc<PersistentVolume>,
    v: Arc<Volumes>,
) -> Result<Action, VolumeError> {
    let vol = v.fresh_pv.latest(vol);
    let Some(add) = finalizer_change(&*vol, PV_PROTECTION, || volume_phase(&vol) == "Bound") else {
        return Ok(Action::await_change());
    };
    let next = with_finalizer(&*vol, PV_PROTECTION, add);
    match v
        .pv_api()
        .replace(&vol.name_any(), &PostParams::default(), &next)
        .await
    {
        Ok(n) => {
            v.fresh_pv.put(n);
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(VolumeError::Api {
                what: "update volume finalizers",
                name: vol.name_any(),
                source,
            })
        }
    }
    Ok(Action::await_change())
}
