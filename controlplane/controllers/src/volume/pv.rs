//! The binder's volume sync (upstream's `syncVolume`): phases Available / Bound / Released /
//! Failed, rolling back bindings the claim did not take, and reclaiming released volumes by
//! their policy (Retain keeps them Released; Recycle has no recycler here, so the volume turns
//! Failed as upstream without a recycler plugin; Delete of an external provisioner's volume is
//! that provisioner's job; Delete of any other volume fails, there being no in-tree deleter).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use super::util::{
    ann, claim_ref, has_ann, pod_claims, pod_terminated, reclaim_policy, volume_mode_mismatch,
    volume_name, volume_phase,
};
use super::write::{unbind, volume_phase_to, volume_phase_with_event};
use super::{
    error_policy, VolumeError, Volumes, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, RESYNC,
};
use crate::ctx::drain;

/// The volume controller (forever); build it before the informers start.
pub fn controller(v: Arc<Volumes>) -> impl std::future::Future<Output = ()> + Send {
    let v1 = v.clone();
    let ctrl = Controller::for_stream(v.pvs.applied(), v.pvs.store()).watches_stream(
        v.pvcs.touched(),
        move |c: PersistentVolumeClaim| {
            let (ns, name) = (c.namespace().unwrap_or_default(), c.name_any());
            let mut refs: Vec<ObjectRef<PersistentVolume>> = v1
                .pvs
                .all()
                .iter()
                .filter(|pv| claim_ref(pv).is_some_and(|(n, m, _)| n == ns && m == name))
                .map(|pv| ObjectRef::from_obj(&**pv))
                .collect();
            if !volume_name(&c).is_empty() {
                refs.push(ObjectRef::new(volume_name(&c)));
            }
            refs
        },
    );
    async move {
        v.ready().await;
        tracing::info!("persistentvolume binder (volumes) started");
        drain(ctrl.run(reconcile, error_policy, v).boxed()).await;
    }
}

/// Syncs one volume.
pub async fn reconcile(vol: Arc<PersistentVolume>, v: Arc<Volumes>) -> Result<Action, VolumeError> {
    let vol = v.fresh_pv.latest(vol);
    sync(&v, &vol).await?;
    v.ctx.limiter.forget(&crate::ctx::key(&*vol));
    Ok(Action::requeue(RESYNC))
}

/// The claim a volume's `claimRef` names, if it still exists with that uid (asking the API
/// server when the cache has none, so a volume whose claim is not cached yet is not released).
async fn referenced_claim(
    v: &Volumes,
    vol: &PersistentVolume,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<Option<PersistentVolumeClaim>, VolumeError> {
    let cached = v.claim(ns, name).map(|c| (*c).clone());
    let settled = matches!(volume_phase(vol), "Released" | "Failed");
    let claim = match cached {
        Some(c) if c.metadata.uid.as_deref() == Some(uid) => return Ok(Some(c)),
        None if settled => return Ok(None),
        _ => kube::Api::<PersistentVolumeClaim>::namespaced(v.ctx.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|source| VolumeError::Api {
                what: "get claim",
                name: format!("{ns}/{name}"),
                source,
            })?,
    };
    Ok(claim.filter(|c| c.metadata.uid.as_deref() == Some(uid)))
}

async fn sync(v: &Volumes, vol: &PersistentVolume) -> Result<(), VolumeError> {
    let Some((ns, name, uid)) = claim_ref(vol) else {
        volume_phase_to(v, vol, "Available", None).await?;
        return Ok(());
    };
    if uid.is_empty() {
        // Pre-bound by a user to a claim not bound yet: the claim sync binds it.
        volume_phase_to(v, vol, "Available", None).await?;
        return Ok(());
    }
    let Some(claim) = referenced_claim(v, vol, &ns, &name, &uid).await? else {
        let vol = if matches!(volume_phase(vol), "Released" | "Failed") {
            vol.clone()
        } else {
            tracing::info!(volume = %vol.name_any(), policy = reclaim_policy(vol), "volume is released");
            volume_phase_to(v, vol, "Released", None).await?
        };
        return reclaim(v, &vol).await;
    };
    let bound_to = volume_name(&claim);
    if bound_to.is_empty() {
        if volume_mode_mismatch(&claim, vol) {
            v.ctx.event(
                vol,
                true,
                "VolumeMismatch",
                format!("Cannot bind PersistentVolume to requested PersistentVolumeClaim {name:?} due to incompatible volumeMode."),
            );
            v.ctx.event(
                &claim,
                true,
                "VolumeMismatch",
                format!("Cannot bind PersistentVolume {:?} to requested PersistentVolumeClaim due to incompatible volumeMode.", vol.name_any()),
            );
        }
        // The claim sync finishes the binding (the claim watch wakes it).
        return Ok(());
    }
    if bound_to == vol.name_any() {
        volume_phase_to(v, vol, "Bound", None).await?;
        return Ok(());
    }
    // The claim is bound to another volume.
    if has_ann(&vol.metadata, ANN_PROVISIONED_BY) && reclaim_policy(vol) == "Delete" {
        let vol = if matches!(volume_phase(vol), "Released" | "Failed") {
            vol.clone()
        } else {
            volume_phase_to(v, vol, "Released", None).await?
        };
        return reclaim(v, &vol).await;
    }
    let _ = has_ann(&vol.metadata, ANN_BOUND_BY_CONTROLLER);
    unbind(v, vol).await
}

/// Runs the reclaim policy of a released volume.
async fn reclaim(v: &Volumes, vol: &PersistentVolume) -> Result<(), VolumeError> {
    match reclaim_policy(vol) {
        "Retain" => Ok(()),
        "Recycle" => {
            let (ns, name, _) = claim_ref(vol).unwrap_or_default();
            let mut users: Vec<String> = v
                .ctx
                .pods
                .in_namespace(&ns)
                .iter()
                .filter(|p| !pod_terminated(p) && pod_claims(p).contains(&name))
                .map(|p| format!("{ns}/{}", p.name_any()))
                .collect();
            users.sort();
            if !users.is_empty() && v.claim(&ns, &name).is_none() {
                v.ctx.event(
                    vol,
                    false,
                    "VolumeFailedRecycle",
                    format!("Volume is used by pods: {}", users.join(",")),
                );
                return Ok(());
            }
            volume_phase_with_event(
                v,
                vol,
                "Failed",
                "VolumeFailedRecycle",
                "No recycler plugin found for the volume!".into(),
            )
            .await?;
            Ok(())
        }
        "Delete" => {
            let by = ann(&vol.metadata, ANN_PROVISIONED_BY).unwrap_or("");
            let csi = vol.spec.as_ref().is_some_and(|s| s.csi.is_some());
            if (!by.is_empty() && !by.starts_with("kubernetes.io/")) || (by.is_empty() && csi) {
                // An external deleter's volume: it deletes the PV itself.
                return Ok(());
            }
            let why = if by.is_empty() {
                format!(
                    "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched",
                    vol.name_any()
                )
            } else {
                format!("no volume plugin matched name: {by}")
            };
            volume_phase_with_event(v, vol, "Failed", "VolumeFailedDelete", why).await?;
            Ok(())
        }
        _ => {
            volume_phase_with_event(
                v,
                vol,
                "Failed",
                "VolumeUnknownReclaimPolicy",
                "Volume has unrecognized PersistentVolumeReclaimPolicy".into(),
            )
            .await?;
            Ok(())
        }
    }
}
