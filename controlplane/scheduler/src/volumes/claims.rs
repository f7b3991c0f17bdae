//! A pod's claims and the facts about claims and PVs the volume plugins share: class, access
//! modes, volume mode, requested size, whether binding is complete, the class's binding mode.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Volumes, ANN_BETA_STORAGE_CLASS, ANN_BIND_COMPLETED};
use crate::resources::parse_scaled;

/// One PVC-backed volume of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimUse {
    /// The claim's name (for a generic ephemeral volume, `<pod>-<volume>`).
    pub claim: String,
    /// Whether the volume is a generic ephemeral volume (its claim must be owned by the pod).
    pub ephemeral: bool,
}

/// Why a pod's claims cannot be resolved (upstream's PreFilter messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodClaimError {
    /// The claim does not exist.
    #[error("persistentvolumeclaim \"{0}\" not found")]
    NotFound(String),
    /// The claim of an ephemeral volume is not created yet.
    #[error("waiting for ephemeral volume controller to create the persistentvolumeclaim \"{0}\"")]
    EphemeralPending(String),
    /// The claim is being deleted.
    #[error("persistentvolumeclaim \"{0}\" is being deleted")]
    Deleting(String),
    /// A claim of the ephemeral volume's name exists but belongs to someone else.
    #[error("persistentvolumeclaim \"{0}\" was not created for the pod")]
    NotOwned(String),
}

/// `namespace/name` of a claim.
pub fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        c.metadata.namespace.as_deref().unwrap_or_default(),
        c.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The PVC-backed volumes of a pod, in volume order.
pub fn pod_claims(pod: &Pod) -> Vec<ClaimUse> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(ClaimUse {
                    claim: c.claim_name.clone(),
                    ephemeral: false,
                })
            } else {
                v.ephemeral.as_ref().map(|_| ClaimUse {
                    claim: format!("{pod_name}-{}", v.name),
                    ephemeral: true,
                })
            }
        })
        .collect()
}

/// Looks up the pod's claims, with upstream's errors for missing, deleting or foreign ones.
pub fn resolve_claims(
    pod: &Pod,
    uses: &[ClaimUse],
    vols: &Volumes,
) -> Result<Vec<std::sync::Arc<PersistentVolumeClaim>>, PodClaimError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(uses.len());
    for u in uses {
        let Some(c) = vols.pvc(&format!("{ns}/{}", u.claim)) else {
            return Err(if u.ephemeral {
                PodClaimError::EphemeralPending(u.claim.clone())
            } else {
                PodClaimError::NotFound(u.claim.clone())
            });
        };
        if c.metadata.deletion_timestamp.is_some() {
            return Err(PodClaimError::Deleting(u.claim.clone()));
        }
        if u.ephemeral {
            let owned =
                c.metadata.owner_references.iter().flatten().any(|o| {
                    o.controller == Some(true) && Some(&o.uid) == pod.metadata.uid.as_ref()
                });
            if !owned {
                return Err(PodClaimError::NotOwned(u.claim.clone()));
            }
        }
        out.push(c.clone());
    }
    Ok(out)
}

/// Whether the claim is bound and the PV controller finished binding it.
pub fn fully_bound(c: &PersistentVolumeClaim) -> bool {
    let named = c
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    let completed = c
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED));
    let phase_bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    named && (completed || phase_bound)
}

/// The claim's `spec.volumeName`, if set.
pub fn volume_name(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty())
}

/// The claim's class: the beta annotation, else `spec.storageClassName`, else `""`.
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    if let Some(a) = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
    {
        return a;
    }
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The PV's class: the beta annotation, else `spec.storageClassName`, else `""`.
pub fn pv_class(pv: &PersistentVolume) -> &str {
    if let Some(a) = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
    {
        return a;
    }
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The claim's access modes.
pub fn claim_modes(c: &PersistentVolumeClaim) -> &[String] {
    c.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

/// The claim's volume mode (`Filesystem` when unset).
pub fn claim_volume_mode(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

/// The claim's storage request in bytes (0 when unset or malformed).
pub fn claim_request(c: &PersistentVolumeClaim) -> i64 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| parse_scaled(&q.0, 0))
        .unwrap_or(0)
}

/// Whether the class binds on first consumer. No class, an unknown class or no mode is
/// Immediate (upstream treats a missing class as Immediate).
pub fn class_delays_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// Whether binding of `c` waits for a consumer (its class is WaitForFirstConsumer).
pub fn is_delay_binding(c: &PersistentVolumeClaim, vols: &Volumes) -> bool {
    let class = claim_class(c);
    !class.is_empty() && class_delays_binding(vols.class(class).map(|a| a.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::VolumeStore;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default", "uid": "pu"},
            "spec": {"containers": [], "volumes": v}}),
        )
        .unwrap()
    }

    #[test]
    fn claims_of_a_pod() {
        let p = pod(json!([
            {"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        ]));
        let uses = pod_claims(&p);
        assert_eq!(
            uses,
            vec![
                ClaimUse {
                    claim: "data".into(),
                    ephemeral: false
                },
                ClaimUse {
                    claim: "web-scratch".into(),
                    ephemeral: true
                }
            ]
        );
        let s = VolumeStore::new();
        let err = |s: &VolumeStore| {
            resolve_claims(&p, &uses, &s.lock())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&s), "persistentvolumeclaim \"data\" not found");
        let c = |name: &str, extra: serde_json::Value| -> PersistentVolumeClaim {
            let mut m = json!({"name": name, "namespace": "default"});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(json!({"metadata": m})).unwrap()
        };
        s.apply_pvc(c(
            "data",
            json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
        ));
        assert_eq!(err(&s), "persistentvolumeclaim \"data\" is being deleted");
        s.apply_pvc(c("data", json!({})));
        assert_eq!(
            err(&s),
            "waiting for ephemeral volume controller to create the persistentvolumeclaim \"web-scratch\""
        );
        s.apply_pvc(c("web-scratch", json!({})));
        assert_eq!(
            err(&s),
            "persistentvolumeclaim \"web-scratch\" was not created for the pod"
        );
        s.apply_pvc(c(
            "web-scratch",
            json!({"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "pu", "controller": true}]}),
        ));
        assert_eq!(resolve_claims(&p, &uses, &s.lock()).unwrap().len(), 2);
    }

    #[test]
    fn claim_facts() {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "d"},
            "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pv1"},
            "status": {"phase": "Pending"}}))
        .unwrap();
        assert_eq!(claim_class(&c), "fast");
        assert_eq!(claim_request(&c), 1 << 30);
        assert_eq!(claim_volume_mode(&c), "Filesystem");
        assert!(!fully_bound(&c), "named but not completed");
        let mut b = c.clone();
        b.status.as_mut().unwrap().phase = Some("Bound".into());
        assert!(fully_bound(&b));
        let s = VolumeStore::new();
        assert!(
            !is_delay_binding(&c, &s.lock()),
            "unknown class is Immediate"
        );
        s.apply_class(
            serde_json::from_value(json!({"metadata": {"name": "fast"}, "provisioner": "p",
                "volumeBindingMode": "WaitForFirstConsumer"}))
            .unwrap(),
        );
        assert!(is_delay_binding(&c, &s.lock()));
    }
}
