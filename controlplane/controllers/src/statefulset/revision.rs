//! ControllerRevisions of a StatefulSet (upstream `controller_history.go` and
//! `getStatefulSetRevisions`): one per distinct pod template, named `<set>-<hash>`, holding the
//! template as the patch `{"spec":{"template":{…,"$patch":"replace"}}}`, numbered in order of
//! use; the oldest unused ones beyond `revisionHistoryLimit` are deleted.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::ObjectMeta;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::claim::OwnerInfo;
use crate::deployment::util::safe_encode;

/// FNV-1, 32 bits (Go's `fnv.New32`, which upstream's `HashControllerRevision` uses).
pub fn fnv32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h
}

/// The revision data of `set`'s current template (upstream `getPatch`).
pub fn data_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision holds (`None`: not a StatefulSet revision).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// The hash of revision data with the collision count (upstream `HashControllerRevision`:
/// the data bytes, then the count in decimal, encoded safely).
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(&fnv32(&bytes).to_string())
}

/// The revision object for `set`'s template at number `revision`.
pub fn new_revision(
    set: &StatefulSet,
    owner: &OwnerInfo,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let data = data_of(&template);
    let h = hash(&data, collision_count);
    let prefix: String = set.name_any().chars().take(223).collect();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}-{h}")),
            namespace: set.namespace(),
            labels: template.metadata.and_then(|m| m.labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![owner.controller_ref()]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// Whether two revisions hold the same template.
pub fn same_data(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// The next revision number after `revs`.
pub fn next_number(revs: &[&ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// The names of the revisions to delete (upstream `truncateHistory`): those not live (current,
/// update, or some pod's revision), oldest first, beyond `limit`.
pub fn to_truncate(
    revs: &[&ControllerRevision],
    live: &HashSet<String>,
    limit: i32,
) -> Vec<String> {
    let mut history: Vec<&&ControllerRevision> = revs
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    history.sort_by_key(|r| (r.revision, r.name_any()));
    let excess = history.len().saturating_sub(limit.max(0) as usize);
    history
        .into_iter()
        .take(excess)
        .map(|r| r.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn tpl(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv1_vectors() {
        // Go: fnv.New32() over "" and "a".
        assert_eq!(fnv32(b""), 0x811c_9dc5);
        assert_eq!(fnv32(b"a"), 0x050c_5d7e);
    }

    #[test]
    fn revision_round_trip_and_hash() {
        let mut set = StatefulSet::default();
        set.metadata.name = Some("web".into());
        set.spec = Some(Default::default());
        set.spec.as_mut().unwrap().template = tpl("a:1");
        let owner = OwnerInfo::of(&set);
        let r1 = new_revision(&set, &owner, 1, None);
        assert!(r1.name_any().starts_with("web-"));
        assert_eq!(template_of(&r1), Some(tpl("a:1")));
        assert_eq!(
            r1.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        let again = new_revision(&set, &owner, 2, None);
        assert_eq!(again.name_any(), r1.name_any());
        assert!(same_data(&r1, &again));
        let collided = new_revision(&set, &owner, 1, Some(1));
        assert_ne!(collided.name_any(), r1.name_any());
        set.spec.as_mut().unwrap().template = tpl("a:2");
        let r2 = new_revision(&set, &owner, 2, None);
        assert_ne!(r2.name_any(), r1.name_any());
        assert!(!same_data(&r1, &r2));
        assert_eq!(next_number(&[&r1, &r2]), 3);
    }

    #[test]
    fn truncation_keeps_live_and_newest() {
        let rev = |name: &str, n: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: None,
            revision: n,
        };
        let revs = [
            rev("a", 1),
            rev("b", 2),
            rev("c", 3),
            rev("d", 4),
            rev("e", 5),
        ];
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let live: HashSet<String> = ["e".to_string(), "a".to_string()].into();
        assert_eq!(to_truncate(&refs, &live, 1), vec!["b", "c"]);
        assert_eq!(to_truncate(&refs, &live, 10), Vec::<String>::new());
        assert_eq!(to_truncate(&refs, &live, 0), vec!["b", "c", "d"]);
    }
}
