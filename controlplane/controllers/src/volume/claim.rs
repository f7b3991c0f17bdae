//! The binder's claim sync (upstream's `syncClaim`): an unbound claim gets its best volume, a
//! default class (retroactively), a `WaitForFirstConsumer` wait, or is handed to its class's
//! external provisioner; a bound claim is kept bound, or turns Lost when its volume went.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use super::binder::{find_best_match, unsatisfied};
use super::util::{
    ann, claim_class, claim_has_class, claim_ref, default_class, has_ann, is_bound_to_claim,
    pod_claims, pod_terminated, volume_name,
};
use super::write::{bind, claim_status_to, claim_status_with_event, update_claim};
use super::{
    error_policy, VolumeError, Volumes, ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, RESYNC,
};
use crate::ctx::{drain, key};

/// Unbound claims (every one that a new volume or class may help).
fn unbound(v: &Volumes) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    v.pvcs
        .all()
        .iter()
        .filter(|c| !has_ann(&c.metadata, ANN_BIND_COMPLETED))
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// The claim controller (forever); build it before the informers start.
pub fn controller(v: Arc<Volumes>) -> impl std::future::Future<Output = ()> + Send {
    let (v1, v2) = (v.clone(), v.clone());
    let ctrl = Controller::for_stream(v.pvcs.applied(), v.pvcs.store())
        .watches_stream(v.pvs.touched(), move |pv: PersistentVolume| {
            let mut refs = unbound(&v1);
            if let Some((ns, name, _)) = claim_ref(&pv) {
                refs.push(ObjectRef::new(&name).within(&ns));
            }
            refs
        })
        .watches_stream(v.classes.touched(), move |_: StorageClass| unbound(&v2))
        .watches_stream(v.ctx.pods.touched(), |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            pod_claims(&pod)
                .into_iter()
                .map(|c| ObjectRef::new(&c).within(&ns))
                .collect::<Vec<_>>()
        });
    async move {
        v.ready().await;
        tracing::info!("persistentvolume binder (claims) started");
        drain(ctrl.run(reconcile, error_policy, v).boxed()).await;
    }
}

/// Syncs one claim.
pub async fn reconcile(
    c: Arc<PersistentVolumeClaim>,
    v: Arc<Volumes>,
) -> Result<Action, VolumeError> {
    let c = v.fresh_pvc.latest(c);
    if has_ann(&c.metadata, ANN_BIND_COMPLETED) {
        sync_bound(&v, &c).await?;
    } else {
        sync_unbound(&v, &c).await?;
    }
    v.ctx.limiter.forget(&key(&*c));
    Ok(Action::requeue(RESYNC))
}

/// Whether the claim's class binds on first consumer.
fn delay_binding(v: &Volumes, c: &PersistentVolumeClaim) -> bool {
    let class = claim_class(c);
    !class.is_empty()
        && v.classes
            .get("", &class)
            .is_some_and(|sc| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

async fn sync_unbound(v: &Volumes, c: &PersistentVolumeClaim) -> Result<(), VolumeError> {
    let wanted = volume_name(c).to_string();
    if wanted.is_empty() {
        let delay = delay_binding(v, c);
        if let Some(vol) = find_best_match(c, &v.all_volumes(), delay) {
            return bind(v, &vol, c).await;
        }
        if assign_default_class(v, c).await? {
            return Ok(());
        }
        if delay && !has_ann(&c.metadata, ANN_SELECTED_NODE) {
            wait_for_consumer_event(v, c);
        } else if !claim_class(c).is_empty() {
            return provision(v, c).await;
        } else {
            v.ctx.event(
                c,
                false,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
            );
        }
        claim_status_to(v, c, "Pending", None).await?;
        return Ok(());
    }
    let Some(vol) = v.volume(&wanted) else {
        claim_status_to(v, c, "Pending", None).await?;
        return Ok(());
    };
    let claimed = vol.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
    if !claimed {
        if let Some(why) = unsatisfied(&vol, c) {
            v.ctx.event(
                c,
                true,
                "VolumeMismatch",
                format!("Cannot bind to requested volume {wanted:?}: {why}"),
            );
            claim_status_to(v, c, "Pending", None).await?;
            return Ok(());
        }
        return bind(v, &vol, c).await;
    }
    if is_bound_to_claim(&vol, c) {
        return bind(v, &vol, c).await;
    }
    v.ctx.event(
        c,
        true,
        "FailedBinding",
        format!("volume {wanted:?} already bound to a different claim."),
    );
    if !has_ann(&c.metadata, ANN_BOUND_BY_CONTROLLER) {
        claim_status_to(v, c, "Pending", None).await?;
        return Ok(());
    }
    let other = claim_ref(&vol)
        .map(|(ns, n, _)| format!("{ns}/{n}"))
        .unwrap_or_default();
    Err(VolumeError::Misbound {
        claim: format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        volume: wanted,
        other,
    })
}

async fn sync_bound(v: &Volumes, c: &PersistentVolumeClaim) -> Result<(), VolumeError> {
    let name = volume_name(c).to_string();
    if name.is_empty() {
        return claim_status_with_event(
            v,
            c,
            "Lost",
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
        )
        .await;
    }
    let Some(vol) = v.volume(&name) else {
        return claim_status_with_event(
            v,
            c,
            "Lost",
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
        )
        .await;
    };
    match claim_ref(&vol) {
        None => bind(v, &vol, c).await,
        Some((_, _, uid)) if Some(uid.as_str()) == c.metadata.uid.as_deref() => {
            bind(v, &vol, c).await
        }
        Some(_) => {
            claim_status_with_event(
                v,
                c,
                "Lost",
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            )
            .await
        }
    }
}

/// Gives a claim without any class the default class, once one exists (upstream's retroactive
/// default StorageClass assignment).
async fn assign_default_class(v: &Volumes, c: &PersistentVolumeClaim) -> Result<bool, VolumeError> {
    if claim_has_class(c) {
        return Ok(false);
    }
    let classes = v.classes.all();
    let Some(class) = default_class(classes.iter().map(|c| &**c)) else {
        return Ok(false);
    };
    let mut next = c.clone();
    next.spec
        .get_or_insert_with(Default::default)
        .storage_class_name = Some(class.name_any());
    update_claim(v, &next).await?;
    Ok(true)
}

/// `WaitForFirstConsumer`, or `WaitForPodScheduled` naming the pods that use the claim but
/// are not scheduled yet.
fn wait_for_consumer_event(v: &Volumes, c: &PersistentVolumeClaim) {
    let name = c.name_any();
    let mut pods: Vec<String> = v
        .ctx
        .pods
        .in_namespace(&c.namespace().unwrap_or_default())
        .iter()
        .filter(|p| !pod_terminated(p) && pod_claims(p).contains(&name))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("")
                .is_empty()
        })
        .map(|p| p.name_any())
        .collect();
    pods.sort();
    let (reason, msg) = match pods.len() {
        0 => (
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".to_string(),
        ),
        1 => (
            "WaitForPodScheduled",
            format!("waiting for pod {} to be scheduled", pods[0]),
        ),
        _ => (
            "WaitForPodScheduled",
            format!("waiting for pods {} to be scheduled", pods.join(",")),
        ),
    };
    v.ctx.event(c, false, reason, msg);
}

/// Hands a claim to its class's provisioner: kennel has no in-tree provisioners, so a
/// `kubernetes.io/` one fails, any other is external (both provisioner annotations are set and
/// the `ExternalProvisioning` event says whom the claim waits for).
async fn provision(v: &Volumes, c: &PersistentVolumeClaim) -> Result<(), VolumeError> {
    let class_name = claim_class(c);
    let Some(class) = v.classes.get("", &class_name) else {
        v.ctx.event(
            c,
            true,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        );
        return Ok(());
    };
    let prov = class.provisioner.clone();
    if prov.starts_with("kubernetes.io/") {
        v.ctx.event(
            c,
            true,
            "ProvisioningFailed",
            format!("no volume plugin matched name: {prov}"),
        );
        return Ok(());
    }
    let mut claim = c.clone();
    if ann(&c.metadata, ANN_BETA_STORAGE_PROVISIONER) != Some(prov.as_str()) {
        let mut next = c.clone();
        let a = next
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        a.insert(ANN_BETA_STORAGE_PROVISIONER.into(), prov.clone());
        a.insert(ANN_STORAGE_PROVISIONER.into(), prov.clone());
        claim = match update_claim(v, &next).await {
            Ok(n) => n,
            Err(e) => {
                v.ctx.event(
                    c,
                    true,
                    "ProvisioningFailed",
                    format!("Error saving claim: {e}"),
                );
                return Err(e);
            }
        };
    }
    v.ctx.event(
        &claim,
        false,
        "ExternalProvisioning",
        format!(
            "Waiting for a volume to be created either by the external provisioner '{prov}' or \
             manually by the system administrator. If volume creation is delayed, please verify \
             that the provisioner is running and correctly registered."
        ),
    );
    Ok(())
}
