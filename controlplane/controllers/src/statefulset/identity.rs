//! A StatefulSet pod's stable identity (upstream `stateful_set_utils.go`): its name
//! `<set>-<ordinal>`, the identity labels, `hostname`/`subdomain` for the governing Service, and
//! one claim `<template>-<pod>` per `volumeClaimTemplates` entry mounted as volume `<template>`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use kube::api::ObjectMeta;
use kube::ResourceExt;

use crate::claim::OwnerInfo;

/// The pod-name label.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod-index label.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The revision label (the ControllerRevision's name).
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Splits `<parent>-<ordinal>` (upstream's `(.*)-([0-9]+)$`).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// The ordinal of `pod` if it is named as a member of set `set` (upstream `isMemberOf`).
pub fn member_ordinal(set: &str, pod: &str) -> Option<i32> {
    parent_and_ordinal(pod).and_then(|(p, o)| (p == set).then_some(o))
}

/// The pod name of `ordinal`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The claim name of `template` for pod `pod`.
pub fn claim_name(template: &str, pod: &str) -> String {
    format!("{template}-{pod}")
}

fn spec_of(set: &StatefulSet) -> (&[PersistentVolumeClaim], Option<&str>) {
    let spec = set.spec.as_ref();
    (
        spec.and_then(|s| s.volume_claim_templates.as_deref())
            .unwrap_or(&[]),
        spec.and_then(|s| s.service_name.as_deref())
            .filter(|s| !s.is_empty()),
    )
}

/// The claims pod `ordinal` of `set` uses (upstream `getPersistentVolumeClaims`): each
/// template's spec, named `<template>-<pod>`, labelled with the template's labels plus the set's
/// `matchLabels`.
pub fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let pod = pod_name(&set.name_any(), ordinal);
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    spec_of(set)
        .0
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&t.name_any(), &pod)),
                    namespace: set.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// A new pod of `set` for `ordinal` from `template`, at `revision` (upstream
/// `newStatefulSetPod` + `setPodRevision`).
pub fn new_pod(
    set: &StatefulSet,
    owner: &OwnerInfo,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Pod {
    let name = pod_name(&set.name_any(), ordinal);
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    let (claim_templates, service) = spec_of(set);
    spec.hostname = Some(name.clone());
    spec.subdomain = service.map(str::to_string);
    // Each claim template replaces a template volume of the same name.
    let mut volumes: Vec<Volume> = spec.volumes.take().unwrap_or_default();
    for t in claim_templates {
        let vname = t.name_any();
        volumes.retain(|v| v.name != vname);
        volumes.push(Volume {
            name: vname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&vname, &name),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner.controller_ref()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Upstream `identityMatches` (name, namespace and pod-name label), plus the pod-index label.
pub fn identity_matches(set: &StatefulSet, pod: &Pod, ordinal: i32) -> bool {
    let l = pod.labels();
    pod.name_any() == pod_name(&set.name_any(), ordinal)
        && pod.namespace() == set.namespace()
        && l.get(POD_NAME_LABEL) == Some(&pod.name_any())
        && l.get(POD_INDEX_LABEL) == Some(&ordinal.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaimSpec, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    #[test]
    fn names_and_ordinals() {
        let cases = [
            ("kubia-0", Some(("kubia", 0))),
            ("my-db-12", Some(("my-db", 12))),
            ("kubia", None),
            ("kubia-", None),
            ("kubia-x1", None),
            ("-3", Some(("", 3))),
        ];
        for (name, want) in cases {
            assert_eq!(parent_and_ordinal(name), want, "{name}");
        }
        assert_eq!(member_ordinal("kubia", "kubia-2"), Some(2));
        assert_eq!(member_ordinal("kubia", "kubiax-2"), None);
        assert_eq!(member_ordinal("my", "my-db-2"), None);
    }

    fn kubia() -> StatefulSet {
        let mut set = StatefulSet::default();
        set.metadata.name = Some("kubia".into());
        set.metadata.namespace = Some("default".into());
        set.spec = Some(StatefulSetSpec {
            service_name: Some("kubia".into()),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "kubia".to_string())].into()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("app".to_string(), "kubia".to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "kubia".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    ..Default::default()
                }),
                status: None,
            }]),
            ..Default::default()
        });
        set
    }

    #[test]
    fn pod_and_claims_of_an_ordinal() {
        let set = kubia();
        let owner = OwnerInfo {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "kubia".into(),
            uid: "u".into(),
            namespace: "default".into(),
            deleting: false,
        };
        let tpl = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &owner, &tpl, 1, "kubia-abc");
        assert_eq!(pod.name_any(), "kubia-1");
        let l = pod.labels();
        assert_eq!(l[POD_NAME_LABEL], "kubia-1");
        assert_eq!(l[POD_INDEX_LABEL], "1");
        assert_eq!(l[REVISION_LABEL], "kubia-abc");
        assert_eq!(l["app"], "kubia");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("kubia-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("kubia"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-kubia-1"
        );
        assert!(identity_matches(&set, &pod, 1));
        assert!(!identity_matches(&set, &pod, 2));
        let c = claims(&set, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name_any(), "data-kubia-1");
        assert_eq!(c[0].labels()["app"], "kubia");
    }
}
