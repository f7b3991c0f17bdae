//! Matching claims to PVs and nodes, with the PV controller's rules: class, access modes,
//! capacity (smallest fit), volume mode, label selector, Available phase, pre-binding; a PV's
//! `nodeAffinity` against a node; a class's `allowedTopologies` against a node's labels.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, TopologySelectorTerm};
use k8s_openapi::api::storage::v1::StorageClass;

use super::claims::{claim_class, claim_modes, claim_request, claim_volume_mode, pv_class};
use super::{Volumes, NO_PROVISIONER};
use crate::nodeinfo::NodeInfo;
use crate::resources::parse_scaled;
use crate::selector::{label_selector_matches, term_matches};

/// Whether the PV's required `nodeAffinity` admits `node` (terms ORed; no affinity admits all).
pub fn pv_fits_node(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    pv_fits(pv, &node.name, node.labels())
}

/// [`pv_fits_node`] on a node's name and labels.
pub fn pv_fits(pv: &PersistentVolume, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(req) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    req.node_selector_terms
        .iter()
        .any(|t| term_matches(t, node_name, labels))
}

/// The PV's capacity in bytes (0 when unset).
pub fn pv_capacity(pv: &PersistentVolume) -> i64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_scaled(&q.0, 0))
        .unwrap_or(0)
}

fn pv_volume_mode(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// How a PV relates to a claim, node affinity aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fit {
    /// Its `claimRef` already names the claim (pre-bound): chosen before any other.
    PreBound,
    /// Free and satisfies the claim.
    Matches,
}

fn fit(claim: &PersistentVolumeClaim, pv: &PersistentVolume, vols: &Volumes) -> Option<Fit> {
    if pv.metadata.deletion_timestamp.is_some() || pv_volume_mode(pv) != claim_volume_mode(claim) {
        return None;
    }
    if let Some(r) = vols.pv_claim(pv) {
        return r.names(claim).then_some(Fit::PreBound);
    }
    let spec = claim.spec.as_ref();
    if let Some(sel) = spec.and_then(|s| s.selector.as_ref()) {
        let empty = BTreeMap::new();
        if !label_selector_matches(Some(sel), pv.metadata.labels.as_ref().unwrap_or(&empty)) {
            return None;
        }
    }
    if pv_phase(pv) != "Available" || pv_class(pv) != claim_class(claim) {
        return None;
    }
    let pv_modes = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    if !claim_modes(claim).iter().all(|m| pv_modes.contains(m)) {
        return None;
    }
    (pv_capacity(pv) >= claim_request(claim)).then_some(Fit::Matches)
}

/// The PVs that could satisfy `claim` on some node, best first: pre-bound ones, then by
/// capacity (smallest fit), then by name.
pub fn candidate_volumes(
    claim: &PersistentVolumeClaim,
    vols: &Volumes,
) -> Vec<Arc<PersistentVolume>> {
    let mut c: Vec<(Fit, i64, Arc<PersistentVolume>)> = vols
        .pvs()
        .filter_map(|pv| fit(claim, pv, vols).map(|f| (f, pv_capacity(pv), pv.clone())))
        .collect();
    c.sort_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| a.2.metadata.name.cmp(&b.2.metadata.name))
    });
    c.into_iter().map(|(_, _, pv)| pv).collect()
}

/// The first of `candidates` that fits `node` and is not in `taken`.
pub fn find_matching_volume<'a>(
    candidates: &'a [Arc<PersistentVolume>],
    node: &NodeInfo,
    taken: &HashSet<String>,
) -> Option<&'a Arc<PersistentVolume>> {
    candidates.iter().find(|pv| {
        !taken.contains(pv.metadata.name.as_deref().unwrap_or_default()) && pv_fits_node(pv, node)
    })
}

/// Whether topology selector terms admit `labels` (no terms admit all; terms are ORed, a
/// term's expressions ANDed; a term without expressions admits nothing).
pub fn topology_matches(terms: &[TopologySelectorTerm], labels: &BTreeMap<String, String>) -> bool {
    if terms.is_empty() {
        return true;
    }
    terms.iter().any(|t| {
        let exprs = t.match_label_expressions.as_deref().unwrap_or_default();
        !exprs.is_empty()
            && exprs
                .iter()
                .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
    })
}

/// Whether the class can provision a volume for `node`: it names a provisioner (not
/// `kubernetes.io/no-provisioner`) and its `allowedTopologies` admit the node's labels.
pub fn can_provision(class: Option<&StorageClass>, node: &NodeInfo) -> bool {
    let Some(class) = class else {
        return false;
    };
    if class.provisioner.is_empty() || class.provisioner == NO_PROVISIONER {
        return false;
    }
    topology_matches(
        class.allowed_topologies.as_deref().unwrap_or_default(),
        node.labels(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::node;
    use crate::volumes::VolumeStore;
    use serde_json::{json, Value};

    fn pv(name: &str, size: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name}, "spec": {"storageClassName": "local",
            "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn claim(extra: Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": "c", "namespace": "default", "uid": "cu"},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn names(v: &[Arc<PersistentVolume>]) -> Vec<String> {
        v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn candidates_follow_the_pv_controller_rules() {
        let s = VolumeStore::new();
        for p in [
            pv("big", "10Gi", json!({})),
            pv("small", "2Gi", json!({})),
            pv("tiny", "512Mi", json!({})),
            pv(
                "other-class",
                "2Gi",
                json!({"spec": {"storageClassName": "fast"}}),
            ),
            pv(
                "rox",
                "2Gi",
                json!({"spec": {"accessModes": ["ReadOnlyMany"]}}),
            ),
            pv("block", "2Gi", json!({"spec": {"volumeMode": "Block"}})),
            pv("released", "2Gi", json!({"status": {"phase": "Released"}})),
            pv(
                "taken",
                "2Gi",
                json!({"spec": {"claimRef": {"namespace": "default", "name": "x"}}}),
            ),
            pv(
                "deleting",
                "2Gi",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ] {
            s.apply_pv(p);
        }
        let c = claim(json!({}));
        assert_eq!(names(&candidate_volumes(&c, &s.lock())), ["small", "big"]);
        // A PV pre-bound to the claim wins even when larger; an assumed PV is taken.
        s.apply_pv(pv(
            "mine",
            "20Gi",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "c"}}}),
        ));
        assert!(s.lock().assume_pv(
            "small",
            crate::volumes::ClaimRef {
                namespace: "default".into(),
                name: "other".into(),
                uid: "o".into()
            }
        ));
        assert_eq!(names(&candidate_volumes(&c, &s.lock())), ["mine", "big"]);
        // Selector on labels.
        s.apply_pv(pv(
            "labeled",
            "3Gi",
            json!({"metadata": {"labels": {"tier": "gold"}}}),
        ));
        let sel = claim(json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}}));
        // (the PV pre-bound to "c" is taken whatever its labels, as upstream)
        assert_eq!(
            names(&candidate_volumes(&sel, &s.lock())),
            ["mine", "labeled"]
        );
        // Block claims only take block PVs.
        let blk = claim(json!({"spec": {"volumeMode": "Block"}}));
        assert_eq!(names(&candidate_volumes(&blk, &s.lock())), ["block"]);
    }

    #[test]
    fn node_affinity_and_exclusion() {
        let a = node("a", json!({"zone": "z1"}), json!({}), json!({}));
        let b = node("b", json!({"zone": "z2"}), json!({}), json!({}));
        let on_b = pv(
            "on-b",
            "1Gi",
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}}),
        );
        assert!(!pv_fits_node(&on_b, &a));
        assert!(pv_fits_node(&on_b, &b));
        let free = pv("free", "1Gi", json!({}));
        assert!(pv_fits_node(&free, &a));
        let empty_terms = pv(
            "none",
            "1Gi",
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": []}}}}),
        );
        assert!(!pv_fits_node(&empty_terms, &a));
        let cands = vec![Arc::new(on_b), Arc::new(free)];
        let mut taken = HashSet::new();
        assert_eq!(
            find_matching_volume(&cands, &b, &taken)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("on-b")
        );
        assert_eq!(
            find_matching_volume(&cands, &a, &taken)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("free")
        );
        taken.insert("free".to_string());
        assert!(find_matching_volume(&cands, &a, &taken).is_none());
    }

    #[test]
    fn provisioning_and_topologies() {
        let a = node("a", json!({"zone": "z1"}), json!({}), json!({}));
        let sc = |v: Value| -> StorageClass {
            let mut base =
                json!({"metadata": {"name": "local"}, "provisioner": "kennel.dev/local-disk"});
            merge(&mut base, v);
            serde_json::from_value(base).unwrap()
        };
        assert!(can_provision(Some(&sc(json!({}))), &a));
        assert!(!can_provision(None, &a));
        assert!(!can_provision(
            Some(&sc(json!({"provisioner": NO_PROVISIONER}))),
            &a
        ));
        let topo = |zone: &str| {
            sc(
                json!({"allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": [zone]}]}]}),
            )
        };
        assert!(can_provision(Some(&topo("z1")), &a));
        assert!(!can_provision(Some(&topo("z2")), &a));
        assert!(!can_provision(
            Some(&sc(json!({"allowedTopologies": [{}]}))),
            &a
        ));
    }
}
