//! What the PV controllers read off claims, volumes and pods (upstream's
//! `component-helpers/storage/volume` helpers): classes (the beta annotation before
//! `storageClassName`), sizes, access and volume modes, the claim a volume points at, the
//! claims a pod uses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{ANN_BETA_DEFAULT_CLASS, ANN_BETA_STORAGE_CLASS, ANN_DEFAULT_CLASS};
use crate::hpa::quantity::parse_milli;

/// Whether `meta` has the annotation `key` (any value).
pub fn has_ann(meta: &ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

/// The annotation `key` of `meta`, if set.
pub fn ann<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The class a claim asks for (`""`: no class).
pub fn claim_class(c: &PersistentVolumeClaim) -> String {
    if let Some(a) = ann(&c.metadata, ANN_BETA_STORAGE_CLASS) {
        return a.to_string();
    }
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// Whether the claim names a class at all (`""` included), so no default class is assigned.
pub fn claim_has_class(c: &PersistentVolumeClaim) -> bool {
    has_ann(&c.metadata, ANN_BETA_STORAGE_CLASS)
        || c.spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// The class of a volume (`""`: no class).
pub fn volume_class(v: &PersistentVolume) -> String {
    if let Some(a) = ann(&v.metadata, ANN_BETA_STORAGE_CLASS) {
        return a.to_string();
    }
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// The `storage` entry of a resource list, in milli-units.
pub fn storage_of(list: Option<&BTreeMap<String, Quantity>>) -> Option<i64> {
    parse_milli(&list?.get("storage")?.0).ok()
}

/// The storage a claim requests (0 when none is given).
pub fn claim_request(c: &PersistentVolumeClaim) -> i64 {
    storage_of(
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
    .unwrap_or(0)
}

/// The capacity of a volume, if it has a readable one.
pub fn volume_capacity(v: &PersistentVolume) -> Option<i64> {
    storage_of(v.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

/// The access modes of a claim.
pub fn claim_modes(c: &PersistentVolumeClaim) -> Vec<String> {
    c.spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default()
}

/// The access modes of a volume, sorted and without duplicates.
pub fn volume_modes(v: &PersistentVolume) -> Vec<String> {
    let mut m = v
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    m.sort();
    m.dedup();
    m
}

/// Whether `have` offers every mode in `want`.
pub fn modes_contain(have: &[String], want: &[String]) -> bool {
    want.iter().all(|w| have.contains(w))
}

/// Whether claim and volume disagree on `volumeMode` (both default to `Filesystem`).
pub fn volume_mode_mismatch(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let cm = c
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let vm = v
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    cm != vm
}

/// `spec.volumeName` of a claim (`""` when unset).
pub fn volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

/// The claim a volume points at: namespace, name and uid (`""` when pre-bound by name).
pub fn claim_ref(v: &PersistentVolume) -> Option<(String, String, String)> {
    let r = v.spec.as_ref()?.claim_ref.as_ref()?;
    Some((
        r.namespace.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
        r.uid.clone().unwrap_or_default(),
    ))
}

/// Whether the volume's `claimRef` names the claim (and, when it has a uid, this very claim).
pub fn is_bound_to_claim(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some((ns, name, uid)) = claim_ref(v) else {
        return false;
    };
    ns == c.namespace().unwrap_or_default()
        && name == c.name_any()
        && (uid.is_empty() || Some(uid.as_str()) == c.metadata.uid.as_deref())
}

/// The phase of a volume (`""` when unset).
pub fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The phase of a claim (`""` when unset).
pub fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The reclaim policy of a volume (`Retain` when unset, as the API defaults it).
pub fn reclaim_policy(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain")
}

/// The claims (names, in the pod's namespace) a pod's volumes use: `persistentVolumeClaim`
/// sources, and `ephemeral` ones as `<pod>-<volume>`.
pub fn pod_claims(pod: &Pod) -> Vec<String> {
    let pod_name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else if v.ephemeral.is_some() {
                Some(format!("{pod_name}-{}", v.name))
            } else {
                None
            }
        })
        .collect()
}

/// Whether a pod has finished (Succeeded or Failed).
pub fn pod_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a class is marked default (GA or beta annotation `"true"`).
pub fn is_default_class(c: &StorageClass) -> bool {
    ann(&c.metadata, ANN_DEFAULT_CLASS) == Some("true")
        || ann(&c.metadata, ANN_BETA_DEFAULT_CLASS) == Some("true")
}

/// The default class among `classes`: the newest marked one, ties by name (upstream's
/// `GetDefaultClass`).
pub fn default_class<'a>(
    classes: impl IntoIterator<Item = &'a StorageClass>,
) -> Option<&'a StorageClass> {
    let mut defaults: Vec<&StorageClass> = classes
        .into_iter()
        .filter(|c| is_default_class(c))
        .collect();
    defaults.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        tb.cmp(&ta).then_with(|| a.name_any().cmp(&b.name_any()))
    });
    defaults.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn classes_prefer_the_beta_annotation() {
        let c = claim(json!({"metadata": {"name": "a", "annotations": {
            "volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"storageClassName": "new"}}));
        assert_eq!(claim_class(&c), "old");
        let c = claim(json!({"metadata": {"name": "a"}, "spec": {"storageClassName": ""}}));
        assert_eq!(claim_class(&c), "");
        assert!(claim_has_class(&c));
        let c = claim(json!({"metadata": {"name": "a"}, "spec": {}}));
        assert!(!claim_has_class(&c));
    }

    #[test]
    fn pods_name_their_claims() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "web-0"}, "spec": {
            "containers": [],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "tmp", "emptyDir": {}}]}}))
        .unwrap();
        assert_eq!(pod_claims(&p), vec!["data-web-0", "web-0-scratch"]);
    }

    #[test]
    fn default_class_is_the_newest_marked_one() {
        let sc = |name: &str, ts: &str, default: bool| -> StorageClass {
            let ann = if default {
                json!({"storageclass.kubernetes.io/is-default-class": "true"})
            } else {
                json!({})
            };
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": ts,
                "annotations": ann}, "provisioner": "p"}))
            .unwrap()
        };
        let all = [
            sc("old", "2024-01-01T00:00:00Z", true),
            sc("new", "2025-01-01T00:00:00Z", true),
            sc("newest", "2026-01-01T00:00:00Z", false),
        ];
        assert_eq!(default_class(&all).unwrap().name_any(), "new");
        assert!(default_class(&all[2..]).is_none());
    }
}
