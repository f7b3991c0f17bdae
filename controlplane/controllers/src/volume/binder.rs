//! Which PersistentVolume an unbound claim gets (upstream's `findBestMatchForClaim` over the
//! access-mode index and `FindMatchingVolume`): volumes are tried by access-mode set, the
//! smallest set that offers every mode the claim asks for first; within one set a volume
//! pre-bound to the claim (`claimRef`) wins at once, otherwise the smallest Available,
//! unclaimed volume of the claim's class whose labels match the claim's selector and whose
//! capacity covers the request. With delayed binding (`WaitForFirstConsumer`) only pre-bound
//! volumes are taken: the scheduler picks the others. Node affinity is not checked here.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::util::{
    claim_class, claim_modes, claim_request, is_bound_to_claim, modes_contain, volume_capacity,
    volume_class, volume_mode_mismatch, volume_modes, volume_phase,
};
use crate::selector::{labels_of, Selector};

/// Why a volume a claim names (`spec.volumeName`) cannot be bound to it (upstream's
/// `checkVolumeSatisfyClaim`), as the text of the `VolumeMismatch` event.
pub fn unsatisfied(v: &PersistentVolume, c: &PersistentVolumeClaim) -> Option<String> {
    let name = v.metadata.name.clone().unwrap_or_default();
    if v.metadata.deletion_timestamp.is_some() {
        return Some(format!("the volume is marked for deletion {name:?}"));
    }
    if volume_capacity(v).unwrap_or(0) < claim_request(c) {
        return Some("requested PV is too small".into());
    }
    if volume_class(v) != claim_class(c) {
        return Some("storageClassName does not match".into());
    }
    if volume_mode_mismatch(c, v) {
        return Some("incompatible volumeMode".into());
    }
    if !modes_contain(&volume_modes(v), &claim_modes(c)) {
        return Some("incompatible accessMode".into());
    }
    None
}

/// The best volume for `claim` among `volumes`, if any.
pub fn find_best_match(
    claim: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    delay_binding: bool,
) -> Option<Arc<PersistentVolume>> {
    let want = claim_modes(claim);
    let mut by_modes: BTreeMap<Vec<String>, Vec<&Arc<PersistentVolume>>> = BTreeMap::new();
    for v in volumes {
        by_modes.entry(volume_modes(v)).or_default().push(v);
    }
    let mut sets: Vec<(&Vec<String>, &Vec<&Arc<PersistentVolume>>)> = by_modes
        .iter()
        .filter(|(modes, _)| modes_contain(modes, &want))
        .collect();
    sets.sort_by_key(|(modes, _)| modes.len());
    sets.into_iter()
        .find_map(|(_, vols)| find_matching(claim, vols, delay_binding))
}

fn find_matching(
    claim: &PersistentVolumeClaim,
    volumes: &[&Arc<PersistentVolume>],
    delay_binding: bool,
) -> Option<Arc<PersistentVolume>> {
    let requested = claim_request(claim);
    let class = claim_class(claim);
    let selector = claim
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(Selector::from_label_selector);
    let mut best: Option<(&Arc<PersistentVolume>, i64)> = None;
    for v in volumes {
        if volume_mode_mismatch(claim, v) || v.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if is_bound_to_claim(v, claim) {
            return Some((*v).clone());
        }
        if delay_binding {
            continue;
        }
        let unclaimed = v.spec.as_ref().is_none_or(|s| s.claim_ref.is_none());
        if volume_phase(v) != "Available" || !unclaimed {
            continue;
        }
        if selector
            .as_ref()
            .is_some_and(|s| !s.matches(&labels_of(&v.metadata.labels)))
        {
            continue;
        }
        if volume_class(v) != class {
            continue;
        }
        let Some(cap) = volume_capacity(v) else {
            continue;
        };
        if cap >= requested && best.is_none_or(|(_, b)| cap < b) {
            best = Some((v, cap));
        }
    }
    best.map(|(v, _)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pv(name: &str, size: &str, modes: &[&str], extra: Value) -> Arc<PersistentVolume> {
        let mut v = json!({"metadata": {"name": name}, "spec": {
            "capacity": {"storage": size}, "accessModes": modes, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).unwrap())
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

    fn pvc(size: &str, modes: &[&str], extra: Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"}, "spec": {
            "accessModes": modes, "resources": {"requests": {"storage": size}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn pick(
        c: &PersistentVolumeClaim,
        vols: &[Arc<PersistentVolume>],
        delay: bool,
    ) -> Option<String> {
        find_best_match(c, vols, delay).and_then(|v| v.metadata.name.clone())
    }

    #[test]
    fn smallest_fitting_volume_wins() {
        let vols = [
            pv("big", "10Gi", &["ReadWriteOnce"], json!({})),
            pv("small", "1Gi", &["ReadWriteOnce"], json!({})),
            pv("fit", "2Gi", &["ReadWriteOnce"], json!({})),
        ];
        assert_eq!(
            pick(&pvc("1500Mi", &["ReadWriteOnce"], json!({})), &vols, false).as_deref(),
            Some("fit")
        );
        assert_eq!(
            pick(&pvc("1Gi", &["ReadWriteOnce"], json!({})), &vols, false).as_deref(),
            Some("small")
        );
        assert_eq!(
            pick(&pvc("11Gi", &["ReadWriteOnce"], json!({})), &vols, false),
            None
        );
    }

    #[test]
    fn access_modes_must_be_a_superset_smallest_set_first() {
        let vols = [
            pv("rwo", "1Gi", &["ReadWriteOnce"], json!({})),
            pv("both", "1Gi", &["ReadWriteOnce", "ReadOnlyMany"], json!({})),
        ];
        assert_eq!(
            pick(&pvc("1Gi", &["ReadOnlyMany"], json!({})), &vols, false).as_deref(),
            Some("both")
        );
        assert_eq!(
            pick(&pvc("1Gi", &["ReadWriteOnce"], json!({})), &vols, false).as_deref(),
            Some("rwo")
        );
        assert_eq!(
            pick(&pvc("1Gi", &["ReadWriteMany"], json!({})), &vols, false),
            None
        );
    }

    #[test]
    fn class_selector_phase_and_mode_filter() {
        let vols = [
            pv(
                "fast",
                "1Gi",
                &["ReadWriteOnce"],
                json!({"spec": {"storageClassName": "fast"}}),
            ),
            pv(
                "labelled",
                "5Gi",
                &["ReadWriteOnce"],
                json!({"metadata": {"labels": {"tier": "gold"}}}),
            ),
            pv("plain", "2Gi", &["ReadWriteOnce"], json!({})),
            pv(
                "released",
                "1Gi",
                &["ReadWriteOnce"],
                json!({"status": {"phase": "Released"}}),
            ),
            pv(
                "block",
                "1Gi",
                &["ReadWriteOnce"],
                json!({"spec": {"volumeMode": "Block"}}),
            ),
        ];
        let rwo = &["ReadWriteOnce"];
        assert_eq!(
            pick(&pvc("1Gi", rwo, json!({})), &vols, false).as_deref(),
            Some("plain")
        );
        let fast = pvc("1Gi", rwo, json!({"spec": {"storageClassName": "fast"}}));
        assert_eq!(pick(&fast, &vols, false).as_deref(), Some("fast"));
        let gold = pvc(
            "1Gi",
            rwo,
            json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}}),
        );
        assert_eq!(pick(&gold, &vols, false).as_deref(), Some("labelled"));
        let block = pvc("1Gi", rwo, json!({"spec": {"volumeMode": "Block"}}));
        assert_eq!(pick(&block, &vols, false).as_deref(), Some("block"));
    }

    #[test]
    fn pre_bound_volumes_win_and_are_the_only_ones_when_delayed() {
        let vols = [
            pv("other", "1Gi", &["ReadWriteOnce"], json!({})),
            pv(
                "mine",
                "5Gi",
                &["ReadWriteOnce"],
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "c"}}}),
            ),
            pv(
                "theirs",
                "1Gi",
                &["ReadWriteOnce"],
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "c", "uid": "u2"}}}),
            ),
        ];
        let c = pvc("1Gi", &["ReadWriteOnce"], json!({}));
        assert_eq!(pick(&c, &vols, false).as_deref(), Some("mine"));
        assert_eq!(pick(&c, &vols, true).as_deref(), Some("mine"));
        assert_eq!(pick(&c, &vols[..1], true), None);
    }

    #[test]
    fn named_volume_checks() {
        let c = pvc("2Gi", &["ReadWriteOnce"], json!({}));
        let small = pv("v", "1Gi", &["ReadWriteOnce"], json!({}));
        assert_eq!(
            unsatisfied(&small, &c).as_deref(),
            Some("requested PV is too small")
        );
        let rox = pv("v", "2Gi", &["ReadOnlyMany"], json!({}));
        assert_eq!(
            unsatisfied(&rox, &c).as_deref(),
            Some("incompatible accessMode")
        );
        let ok = pv("v", "2Gi", &["ReadWriteOnce"], json!({}));
        assert_eq!(unsatisfied(&ok, &c), None);
    }
}
