//! The writes of the binder, each a compare-and-swap on the version read (a conflict is retried
//! by the next sync): the two-sided bind (volume `claimRef` first, then its phase, then the
//! claim's `volumeName` and annotations, then its status), unbinding, and phase changes with
//! their events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::ResourceExt;

use super::util::{claim_phase, has_ann, is_bound_to_claim, volume_phase};
use super::{VolumeError, Volumes, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER};
use crate::podutil;

fn api_err(what: &'static str, name: String) -> impl FnOnce(kube::Error) -> VolumeError {
    move |source| VolumeError::Api { what, name, source }
}

fn set_ann(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, k: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(k.into(), "yes".into());
}

/// Saves a new spec/metadata of a volume.
pub async fn update_volume(
    v: &Volumes,
    vol: &PersistentVolume,
) -> Result<PersistentVolume, VolumeError> {
    let new = v
        .pv_api()
        .replace(&vol.name_any(), &PostParams::default(), vol)
        .await
        .map_err(api_err("update volume", vol.name_any()))?;
    v.fresh_pv.put(new.clone());
    Ok(new)
}

/// Saves a new spec/metadata of a claim.
pub async fn update_claim(
    v: &Volumes,
    c: &PersistentVolumeClaim,
) -> Result<PersistentVolumeClaim, VolumeError> {
    let new = v
        .pvc_api(c)
        .replace(&c.name_any(), &PostParams::default(), c)
        .await
        .map_err(api_err("update claim", c.name_any()))?;
    v.fresh_pvc.put(new.clone());
    Ok(new)
}

/// Sets a volume's phase (and message, transition time) unless it has it already.
pub async fn volume_phase_to(
    v: &Volumes,
    vol: &PersistentVolume,
    phase: &str,
    message: Option<String>,
) -> Result<PersistentVolume, VolumeError> {
    if volume_phase(vol) == phase {
        return Ok(vol.clone());
    }
    let mut next = vol.clone();
    let st = next.status.get_or_insert_with(Default::default);
    st.phase = Some(phase.into());
    st.message = message;
    st.last_phase_transition_time = Some(Time(podutil::now()));
    let new = v
        .pv_api()
        .replace_status(&vol.name_any(), &PostParams::default(), &next)
        .await
        .map_err(api_err("update volume status", vol.name_any()))?;
    tracing::info!(volume = %vol.name_any(), phase, "volume entered phase");
    v.fresh_pv.put(new.clone());
    Ok(new)
}

/// [`volume_phase_to`], with a Warning event when the phase changes.
pub async fn volume_phase_with_event(
    v: &Volumes,
    vol: &PersistentVolume,
    phase: &str,
    reason: &str,
    message: String,
) -> Result<PersistentVolume, VolumeError> {
    if volume_phase(vol) == phase {
        return Ok(vol.clone());
    }
    let new = volume_phase_to(v, vol, phase, Some(message.clone())).await?;
    v.ctx.event(&new, true, reason, message);
    Ok(new)
}

/// Sets a claim's phase, and its access modes and capacity from `vol` (cleared without one).
pub async fn claim_status_to(
    v: &Volumes,
    c: &PersistentVolumeClaim,
    phase: &str,
    vol: Option<&PersistentVolume>,
) -> Result<PersistentVolumeClaim, VolumeError> {
    let mut next = c.clone();
    let becoming = claim_phase(c) != phase;
    let st = next.status.get_or_insert_with(Default::default);
    st.phase = Some(phase.into());
    match vol {
        None => {
            st.access_modes = None;
            st.capacity = None;
        }
        Some(vol) => {
            let spec = vol.spec.clone().unwrap_or_default();
            st.access_modes = spec.access_modes.clone();
            if becoming {
                let cap = spec
                    .capacity
                    .filter(|c| c.contains_key("storage"))
                    .ok_or_else(|| VolumeError::NoCapacity(vol.name_any()))?;
                st.capacity = Some(cap);
            }
        }
    }
    if next.status == c.status {
        return Ok(c.clone());
    }
    let new = v
        .pvc_api(c)
        .replace_status(&c.name_any(), &PostParams::default(), &next)
        .await
        .map_err(api_err("update claim status", c.name_any()))?;
    if becoming {
        tracing::info!(claim = %crate::ctx::key(c), phase, "claim entered phase");
    }
    v.fresh_pvc.put(new.clone());
    Ok(new)
}

/// [`claim_status_to`], with a Warning event when the phase changes.
pub async fn claim_status_with_event(
    v: &Volumes,
    c: &PersistentVolumeClaim,
    phase: &str,
    reason: &str,
    message: &str,
) -> Result<(), VolumeError> {
    if claim_phase(c) == phase {
        return Ok(());
    }
    let new = claim_status_to(v, c, phase, None).await?;
    v.ctx.event(&new, true, reason, message.into());
    Ok(())
}

/// Binds `vol` and `c` to each other and marks both Bound (each step only when needed).
pub async fn bind(
    v: &Volumes,
    vol: &PersistentVolume,
    c: &PersistentVolumeClaim,
) -> Result<(), VolumeError> {
    // 1. The volume points at the claim (uid included).
    let mut vol = vol.clone();
    let pre_bound = is_bound_to_claim(&vol, c);
    let same = vol
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name.as_deref() == c.metadata.name.as_deref()
                && r.namespace.as_deref() == c.metadata.namespace.as_deref()
                && r.uid.as_deref() == c.metadata.uid.as_deref()
        });
    let mut dirty = false;
    if !same {
        vol.spec.get_or_insert_with(Default::default).claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: c.metadata.namespace.clone(),
            name: c.metadata.name.clone(),
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
            ..Default::default()
        });
        dirty = true;
    }
    if !pre_bound && !has_ann(&vol.metadata, ANN_BOUND_BY_CONTROLLER) {
        set_ann(&mut vol.metadata, ANN_BOUND_BY_CONTROLLER);
        dirty = true;
    }
    if dirty {
        vol = update_volume(v, &vol).await?;
        tracing::info!(volume = %vol.name_any(), claim = %crate::ctx::key(c), "volume bound to claim");
    }
    // 2. The volume is Bound.
    let vol = volume_phase_to(v, &vol, "Bound", None).await?;
    // 3. The claim points at the volume.
    let mut claim = c.clone();
    let mut dirty = false;
    if super::util::volume_name(&claim) != vol.name_any() {
        claim.spec.get_or_insert_with(Default::default).volume_name = Some(vol.name_any());
        if !has_ann(&claim.metadata, ANN_BOUND_BY_CONTROLLER) {
            set_ann(&mut claim.metadata, ANN_BOUND_BY_CONTROLLER);
        }
        dirty = true;
    }
    if !has_ann(&claim.metadata, ANN_BIND_COMPLETED) {
        set_ann(&mut claim.metadata, ANN_BIND_COMPLETED);
        dirty = true;
    }
    if dirty {
        claim = update_claim(v, &claim).await?;
    }
    // 4. The claim is Bound, with the volume's modes and capacity.
    claim_status_to(v, &claim, "Bound", Some(&vol)).await?;
    Ok(())
}

/// Rolls back a binding of `vol`: a controller-made `claimRef` goes, a user's pre-binding keeps
/// its name but loses its uid; the volume is Available again.
pub async fn unbind(v: &Volumes, vol: &PersistentVolume) -> Result<(), VolumeError> {
    let mut next = vol.clone();
    if has_ann(&vol.metadata, ANN_BOUND_BY_CONTROLLER) {
        if let Some(s) = next.spec.as_mut() {
            s.claim_ref = None;
        }
        if let Some(a) = next.metadata.annotations.as_mut() {
            a.remove(ANN_BOUND_BY_CONTROLLER);
        }
    } else if let Some(r) = next.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
        r.uid = None;
    }
    let new = update_volume(v, &next).await?;
    volume_phase_to(v, &new, "Available", None).await?;
    Ok(())
}
