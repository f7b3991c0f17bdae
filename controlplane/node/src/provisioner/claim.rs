//! The provisioner's decisions, without the API: which claims are this node's to provision,
//! what the class asks for, the PersistentVolume built from a claim, and which PVs are this
//! node's to delete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ObjectMeta;

use super::PROVISIONER;
use crate::volume::image::DEFAULT_FS_TYPE;

/// The claim annotation naming the provisioner that should provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its deprecated beta form.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The node the scheduler picked for a WaitForFirstConsumer claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The PV annotation naming who provisioned it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The node label PVs are pinned with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Why a claim cannot be provisioned (the text of the ProvisioningFailed event, after
/// `failed to provision volume with StorageClass "<class>": `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A class parameter this provisioner does not know.
    #[error("invalid parameter {0:?}: kennel.dev/local-disk knows only fsType (csi.storage.k8s.io/fstype)")]
    UnknownParameter(String),
    /// An fsType kennel cannot make.
    #[error("invalid fsType {0:?}: kennel.dev/local-disk makes ext2, ext3 and ext4")]
    FsType(String),
    /// ReadWriteMany (or another mode a single VM's disk cannot honour).
    #[error("access mode {0} is not supported: a kennel.dev/local-disk volume is attached to one pod VM at a time")]
    AccessMode(String),
    /// Block volumes.
    #[error("volumeMode {0} is not supported: kennel.dev/local-disk provides Filesystem volumes")]
    VolumeMode(String),
    /// No (or no positive) storage request.
    #[error("claim has no positive resources.requests.storage")]
    NoSize,
    /// Claim selectors cannot be honoured by dynamic provisioning (as upstream).
    #[error("claim Selector is not supported")]
    Selector,
}

/// What to do with a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not this provisioner's, not this node's, or already bound.
    Ignore,
    /// Provision it here.
    Provision,
}

/// The provisioner a claim names (the GA annotation, then the beta one).
pub fn claim_provisioner(pvc: &PersistentVolumeClaim) -> Option<&str> {
    let ann = pvc.metadata.annotations.as_ref()?;
    ann.get(ANN_STORAGE_PROVISIONER)
        .or_else(|| ann.get(ANN_BETA_STORAGE_PROVISIONER))
        .map(String::as_str)
}

/// Whether the node `node` should provision `pvc` of class `class`.
pub fn decide(pvc: &PersistentVolumeClaim, class: &StorageClass, node: &str) -> Decision {
    if claim_provisioner(pvc) != Some(PROVISIONER) || class.provisioner != PROVISIONER {
        return Decision::Ignore;
    }
    if pvc.metadata.deletion_timestamp.is_some() {
        return Decision::Ignore;
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
        return Decision::Ignore;
    }
    if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
        return Decision::Ignore;
    }
    let selected = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_SELECTED_NODE))
        .map(String::as_str);
    let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    match selected {
        Some(n) if n == node => Decision::Provision,
        Some(_) => Decision::Ignore,
        None if wait => Decision::Ignore,
        // Immediate: any node may; the deterministic PV name lets one win.
        None => Decision::Provision,
    }
}

/// The filesystem the class asks for (checks every parameter).
pub fn class_fs_type(class: &StorageClass) -> Result<String, ClaimError> {
    let mut fs_type = DEFAULT_FS_TYPE.to_string();
    for (k, v) in class.parameters.iter().flatten() {
        match k.as_str() {
            "fsType" | "csi.storage.k8s.io/fstype" => {
                if !matches!(v.as_str(), "ext2" | "ext3" | "ext4") {
                    return Err(ClaimError::FsType(v.clone()));
                }
                fs_type = v.clone();
            }
            other => return Err(ClaimError::UnknownParameter(other.to_string())),
        }
    }
    Ok(fs_type)
}

/// The requested size in bytes, after checking what the claim asks of the volume.
pub fn claim_size(pvc: &PersistentVolumeClaim) -> Result<i64, ClaimError> {
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.selector.is_some() {
        return Err(ClaimError::Selector);
    }
    for m in spec.access_modes.iter().flatten() {
        if m == "ReadWriteMany" {
            return Err(ClaimError::AccessMode(m.clone()));
        }
    }
    if let Some(mode) = spec.volume_mode.as_deref().filter(|m| *m != "Filesystem") {
        return Err(ClaimError::VolumeMode(mode.to_string()));
    }
    spec.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(crate::pod::spec::quantity_bytes)
        .filter(|b| *b > 0)
        .ok_or(ClaimError::NoSize)
}

/// The deterministic name of the PV of a claim (`pvc-<claim uid>`, as upstream).
pub fn pv_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

/// The image of the PV `pv_name` under `volumes_dir`.
pub fn image_path(volumes_dir: &Path, pv_name: &str) -> PathBuf {
    volumes_dir.join(format!("{pv_name}.img"))
}

/// The PersistentVolume for `pvc` of `class`, pinned to `node`, backed by `image`.
pub fn build_pv(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    image: &Path,
    fs_type: &str,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned());
    let capacity = storage.map(|q| BTreeMap::from([("storage".to_string(), q)]));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(pvc)),
            annotations: Some(BTreeMap::from([(
                ANN_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity,
            access_modes: spec.access_modes.clone(),
            volume_mode: Some(
                spec.volume_mode
                    .clone()
                    .unwrap_or_else(|| "Filesystem".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            mount_options: class.mount_options.clone(),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.metadata.namespace.clone(),
                name: pvc.metadata.name.clone(),
                uid: pvc.metadata.uid.clone(),
                resource_version: pvc.metadata.resource_version.clone(),
                ..Default::default()
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: PROVISIONER.into(),
                volume_handle: image.display().to_string(),
                fs_type: Some(fs_type.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether `pv` was provisioned by this provisioner on `node`, with its image under
/// `volumes_dir`: the image path, if so.
pub fn own_image(pv: &PersistentVolume, node: &str, volumes_dir: &Path) -> Option<PathBuf> {
    let by = pv.metadata.annotations.as_ref()?.get(ANN_PROVISIONED_BY)?;
    if by != PROVISIONER {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    let csi = spec.csi.as_ref().filter(|c| c.driver == PROVISIONER)?;
    let pinned_here = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .is_some_and(|r| {
            r.node_selector_terms.iter().any(|t| {
                t.match_expressions.iter().flatten().any(|e| {
                    e.key == HOSTNAME_LABEL
                        && e.operator == "In"
                        && e.values.iter().flatten().any(|v| v == node)
                })
            })
        });
    let image = PathBuf::from(&csi.volume_handle);
    (pinned_here && image.parent() == Some(volumes_dir)).then_some(image)
}

/// Whether an own PV is due for deletion: `Released` with reclaim policy `Delete`.
pub fn should_delete(pv: &PersistentVolume) -> bool {
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    released && delete && pv.metadata.deletion_timestamp.is_none()
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
