//! ControllerRevisions of a DaemonSet (upstream `daemonset/update.go`: `snapshot`, `Match`,
//! `cleanupHistory`): one per distinct pod template, named `<ds>-<hash>` where the hash is the
//! pod-template hash (with the collision count) that the pods carry as
//! `controller-revision-hash`; data `{"spec":{"template":{…,"$patch":"replace"}}}` so `kubectl
//! rollout undo` can apply it as a strategic merge patch.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::ObjectMeta;
use kube::ResourceExt;

use crate::claim::OwnerInfo;
use crate::deployment::util::template_hash;
use crate::statefulset::revision::data_of;

/// The label naming a pod's (and a revision's) template hash.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The hash label of a pod or revision.
pub fn hash_of<K: kube::Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
}

/// The revision of `ds`'s current template numbered `revision` (upstream `snapshot`).
pub fn new_revision(
    ds: &DaemonSet,
    owner: &OwnerInfo,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let hash = template_hash(&template, collision_count);
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let prefix: String = ds.name_any().chars().take(223).collect();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}-{hash}")),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![owner.controller_ref()]),
            ..Default::default()
        },
        data: Some(RawExtension(data_of(&template))),
        revision,
    }
}

/// Whether `rev` holds `ds`'s current template (upstream `Match`).
pub fn matches(ds: &DaemonSet, rev: &ControllerRevision) -> bool {
    let Some(spec) = ds.spec.as_ref() else {
        return false;
    };
    rev.data.as_ref().map(|d| &d.0) == Some(&data_of(&spec.template))
}

/// The hash pods of revision `rev` carry: its label, else (an old revision without it) its name
/// as upstream does.
pub fn revision_hash(rev: &ControllerRevision) -> String {
    hash_of(rev).map_or_else(|| rev.name_any(), str::to_string)
}

/// Upstream `cleanupHistory`: of the `old` revisions, the oldest beyond `limit` whose hash no
/// live pod carries.
pub fn to_delete(old: &[&ControllerRevision], live: &HashSet<String>, limit: i32) -> Vec<String> {
    let mut to_kill = old.len() as i64 - i64::from(limit.max(0));
    let mut sorted: Vec<&&ControllerRevision> = old.iter().collect();
    sorted.sort_by_key(|r| (r.revision, r.name_any()));
    let mut out = Vec::new();
    for r in sorted {
        if to_kill <= 0 {
            break;
        }
        if hash_of(*r).is_some_and(|h| live.contains(h)) {
            continue;
        }
        out.push(r.name_any());
        to_kill -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use std::collections::BTreeMap;

    fn ds(image: &str) -> DaemonSet {
        let mut d = DaemonSet::default();
        d.metadata.name = Some("logs".into());
        d.metadata.namespace = Some("ns".into());
        d.metadata.uid = Some("u".into());
        d.spec = Some(DaemonSetSpec {
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("app".into(), "logs".into())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        });
        d
    }

    #[test]
    fn revision_shape() {
        let d = ds("a:1");
        let r = new_revision(&d, &OwnerInfo::of(&d), 1, None);
        let h = hash_of(&r).expect("hash").to_string();
        assert_eq!(r.name_any(), format!("logs-{h}"));
        assert_eq!(r.labels()["app"], "logs");
        assert_eq!(
            r.data.as_ref().expect("data").0["spec"]["template"]["$patch"],
            "replace"
        );
        assert!(matches(&d, &r));
        assert!(!matches(&ds("a:2"), &r));
        let collided = new_revision(&d, &OwnerInfo::of(&d), 1, Some(1));
        assert_ne!(collided.name_any(), r.name_any());
        assert_eq!(revision_hash(&r), h);
        assert_eq!(
            crate::statefulset::revision::template_of(&r),
            d.spec.map(|s| s.template)
        );
    }

    #[test]
    fn cleanup_keeps_live_and_newest() {
        let rev = |name: &str, n: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(HASH_LABEL.into(), name.into())])),
                ..Default::default()
            },
            data: None,
            revision: n,
        };
        let revs = [rev("a", 1), rev("b", 2), rev("c", 3), rev("d", 4)];
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let live: HashSet<String> = ["a".to_string()].into();
        assert_eq!(to_delete(&refs, &live, 2), vec!["b", "c"]);
        assert_eq!(to_delete(&refs, &live, 4), Vec::<String>::new());
        assert_eq!(to_delete(&refs, &HashSet::new(), 1), vec!["a", "b", "c"]);
    }
}
