//! The storage edges of the Node authorizer's graph: which PersistentVolume a claim is bound to.
//!
//! Upstream's graph draws `pv → pvc` from the volume's `spec.claimRef`; kennel's node agent
//! reaches the volume from the claim's `spec.volumeName` (as kubelet does). An edge exists here
//! only when both sides of the bind agree — the claim names the volume and the volume's
//! `claimRef` names the claim back — so neither a claim's author (pre-binding `volumeName` to
//! somebody else's volume) nor a volume's `claimRef` alone opens a volume to a node. Together
//! with the pod → claim edges of [`super::index::Index`], a node may get a volume exactly when a
//! pod bound to it uses a claim bound to that volume.

use std::collections::HashMap;

use serde::Deserialize;

/// Store key prefix of PersistentVolumeClaims (`<ns>/<name>` follows).
pub const PVCS_PREFIX: &str = "/registry/core/persistentvolumeclaims/";
/// Store key prefix of PersistentVolumes (`<name>` follows).
pub const PVS_PREFIX: &str = "/registry/core/persistentvolumes/";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawClaimSpec {
    #[serde(default)]
    volume_name: Option<String>,
}

#[derive(Deserialize)]
struct RawClaim {
    #[serde(default)]
    spec: Option<RawClaimSpec>,
}

#[derive(Deserialize, Default)]
struct RawRef {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawVolumeSpec {
    #[serde(default)]
    claim_ref: Option<RawRef>,
}

#[derive(Deserialize)]
struct RawVolume {
    #[serde(default)]
    spec: Option<RawVolumeSpec>,
}

/// A claim: namespace, name.
pub type ClaimKey = (String, String);

/// Claims' `spec.volumeName` and volumes' `spec.claimRef`.
#[derive(Debug, Default)]
pub struct VolumeIndex {
    /// Claim → the volume it names (claims without `volumeName` are absent).
    claim_volume: HashMap<ClaimKey, String>,
    /// Volume → the claim its `claimRef` names (volumes without one are absent).
    volume_claim: HashMap<String, ClaimKey>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl VolumeIndex {
    /// Applies a put at `key`; false when the key is not a claim's or a volume's.
    pub fn apply_put(&mut self, key: &str, value: &[u8]) -> bool {
        if let Some(rest) = key.strip_prefix(PVCS_PREFIX) {
            let Some((ns, name)) = rest.split_once('/') else {
                return true;
            };
            let claim = (ns.to_string(), name.to_string());
            let volume = serde_json::from_slice::<RawClaim>(value)
                .ok()
                .and_then(|c| non_empty(c.spec?.volume_name));
            match volume {
                Some(v) => self.claim_volume.insert(claim, v),
                None => self.claim_volume.remove(&claim),
            };
            return true;
        }
        if let Some(name) = key.strip_prefix(PVS_PREFIX) {
            let claim = serde_json::from_slice::<RawVolume>(value)
                .ok()
                .and_then(|v| v.spec?.claim_ref)
                .and_then(|r| Some((non_empty(r.namespace)?, non_empty(r.name)?)));
            match claim {
                Some(c) => self.volume_claim.insert(name.to_string(), c),
                None => self.volume_claim.remove(name),
            };
            return true;
        }
        false
    }

    /// Applies a delete at `key`; false when the key is not a claim's or a volume's.
    pub fn apply_delete(&mut self, key: &str) -> bool {
        if let Some(rest) = key.strip_prefix(PVCS_PREFIX) {
            if let Some((ns, name)) = rest.split_once('/') {
                self.claim_volume
                    .remove(&(ns.to_string(), name.to_string()));
            }
            return true;
        }
        if let Some(name) = key.strip_prefix(PVS_PREFIX) {
            self.volume_claim.remove(name);
            return true;
        }
        false
    }

    /// The claim `volume` is bound to, when both sides of the bind agree.
    pub fn bound_claim(&self, volume: &str) -> Option<&ClaimKey> {
        let claim = self.volume_claim.get(volume)?;
        (self.claim_volume.get(claim).map(String::as_str) == Some(volume)).then_some(claim)
    }

    /// Numbers of claims naming a volume and of volumes naming a claim.
    pub fn counts(&self) -> [usize; 2] {
        [self.claim_volume.len(), self.volume_claim.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn put(idx: &mut VolumeIndex, key: &str, v: Value) {
        assert!(idx.apply_put(key, &serde_json::to_vec(&v).unwrap()));
    }

    fn claim(volume: Option<&str>) -> Value {
        json!({"metadata": {"name": "data", "namespace": "a"}, "spec": {"volumeName": volume}})
    }

    fn volume(claim: Option<(&str, &str)>) -> Value {
        let r = claim.map(|(ns, n)| json!({"kind": "PersistentVolumeClaim", "namespace": ns, "name": n, "uid": "u1"}));
        json!({"metadata": {"name": "pv1"}, "spec": {"claimRef": r}})
    }

    const CLAIM: &str = "/registry/core/persistentvolumeclaims/a/data";
    const PV: &str = "/registry/core/persistentvolumes/pv1";

    #[test]
    fn both_sides_of_the_bind_make_the_edge() {
        let mut idx = VolumeIndex::default();
        let key: ClaimKey = ("a".into(), "data".into());
        let bound = || Some(&key);
        // A pending claim and an unclaimed volume: no edge.
        put(&mut idx, CLAIM, claim(None));
        put(&mut idx, PV, volume(None));
        assert_eq!(idx.bound_claim("pv1"), None);
        // The binder writes claimRef first: still no edge until the claim names the volume.
        put(&mut idx, PV, volume(Some(("a", "data"))));
        assert_eq!(idx.bound_claim("pv1"), None);
        put(&mut idx, CLAIM, claim(Some("pv1")));
        assert_eq!(idx.bound_claim("pv1"), bound());
        // The order of the two writes does not matter.
        put(&mut idx, PV, volume(None));
        assert_eq!(idx.bound_claim("pv1"), None);
        put(&mut idx, PV, volume(Some(("a", "data"))));
        assert_eq!(idx.bound_claim("pv1"), bound());
        // Deleting either side drops the edge.
        assert!(idx.apply_delete(CLAIM));
        assert_eq!(idx.bound_claim("pv1"), None);
        put(&mut idx, CLAIM, claim(Some("pv1")));
        assert!(idx.apply_delete(PV));
        assert_eq!(idx.bound_claim("pv1"), None);
        assert_eq!(idx.counts(), [1, 0]);
    }

    #[test]
    fn one_sided_binds_are_not_edges() {
        let mut idx = VolumeIndex::default();
        // A claim pre-bound (by its author) to a volume that is bound to another claim.
        put(&mut idx, CLAIM, claim(Some("pv1")));
        put(&mut idx, PV, volume(Some(("a", "other"))));
        assert_eq!(idx.bound_claim("pv1"), None);
        // Same name, other namespace.
        put(&mut idx, PV, volume(Some(("b", "data"))));
        assert_eq!(idx.bound_claim("pv1"), None);
        // A volume naming a claim that names another volume.
        put(&mut idx, PV, volume(Some(("a", "data"))));
        put(&mut idx, CLAIM, claim(Some("pv2")));
        assert_eq!(idx.bound_claim("pv1"), None);
        // An empty claimRef, an empty volumeName, malformed values: nothing.
        put(
            &mut idx,
            PV,
            json!({"spec": {"claimRef": {"namespace": "", "name": "data"}}}),
        );
        assert_eq!(idx.counts(), [1, 0]);
        put(&mut idx, CLAIM, claim(Some("")));
        assert_eq!(idx.counts(), [0, 0]);
        assert!(idx.apply_put(CLAIM, b"not json"));
        assert!(idx.apply_put(PV, b"{\"spec\": 3}"));
        assert_eq!(idx.counts(), [0, 0]);
        // Other keys are not ours.
        assert!(!idx.apply_put("/registry/core/pods/a/web", b"{}"));
        assert!(!idx.apply_delete("/registry/core/secrets/a/s"));
    }
}
