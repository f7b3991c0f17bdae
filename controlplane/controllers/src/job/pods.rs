//! A Job's pods: building them from `spec.template` with upstream's labels, annotations,
//! index, hostname and `JOB_COMPLETION_INDEX` env, and reading the facts the sync needs from
//! existing ones (phase, completion index, finish time, readiness, restarts).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec,
};
use kube::api::ObjectMeta;
use kube::ResourceExt;

use crate::claim::OwnerInfo;
use crate::podutil;

/// Label and annotation naming the Job's uid on its pods.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label naming the Job on its pods.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The pre-1.27 spelling of [`CONTROLLER_UID`], still set upstream.
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
/// The pre-1.27 spelling of [`JOB_NAME`], still set upstream.
pub const LEGACY_JOB_NAME: &str = "job-name";
/// Annotation and label carrying an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The env var an Indexed Job's containers get (from the annotation, by the downward API).
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The labels every pod of `job` carries.
pub fn job_labels(job: &Job) -> BTreeMap<String, String> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.name_any();
    BTreeMap::from([
        (CONTROLLER_UID.to_string(), uid.clone()),
        (JOB_NAME.to_string(), name.clone()),
        (LEGACY_CONTROLLER_UID.to_string(), uid),
        (LEGACY_JOB_NAME.to_string(), name),
    ])
}

fn with_index_env(mut c: Container) -> Container {
    let env = c.env.get_or_insert_with(Vec::new);
    if !env.iter().any(|e| e.name == INDEX_ENV) {
        env.push(EnvVar {
            name: INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        });
    }
    c
}

/// A pod for `job` from `template`; `index` for Indexed Jobs (name `<job>-<index>-xxxxx`,
/// hostname `<job>-<index>`, index annotation, label and env).
pub fn new_pod(
    job: &Job,
    template: &PodTemplateSpec,
    owner: &OwnerInfo,
    index: Option<i32>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.extend(job_labels(job));
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{}-{i}", owner.name));
            }
            spec.containers = spec.containers.into_iter().map(with_index_env).collect();
            spec.init_containers = spec
                .init_containers
                .map(|cs| cs.into_iter().map(with_index_env).collect());
            format!("{}-{i}-", owner.name)
        }
        None => format!("{}-", owner.name),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner.controller_ref()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Where a pod is in its life, as the Job controller counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not terminal and not being deleted.
    Active,
    /// Not terminal but being deleted.
    Terminating,
    /// Phase Succeeded.
    Succeeded,
    /// Phase Failed.
    Failed,
    /// Terminal and being deleted: no longer counted.
    Gone,
}

/// The facts of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Life state.
    pub state: State,
    /// Completion index (annotation first, then label), if valid.
    pub index: Option<i32>,
    /// When it finished (latest container finish, else last condition change, else creation),
    /// seconds since the epoch.
    pub finished_at: Option<i64>,
    /// Ready condition True.
    pub ready: bool,
    /// Container restarts (for `restartPolicy: OnFailure`).
    pub restarts: i32,
}

/// The completion index of `pod`, if it has a valid one.
pub fn index_of(pod: &Pod) -> Option<i32> {
    let from = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(COMPLETION_INDEX))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|i| *i >= 0)
    };
    from(&pod.metadata.annotations).or_else(|| from(&pod.metadata.labels))
}

fn finished_at(pod: &Pod) -> Option<i64> {
    let st = pod.status.as_ref();
    let containers = st
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max();
    let conds = st
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
        .max();
    containers.or(conds).or_else(|| {
        pod.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
    })
}

/// The facts of `pod`.
pub fn facts(pod: &Pod) -> Facts {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let state = match (phase, deleting) {
        (Some("Succeeded" | "Failed"), true) => State::Gone,
        (Some("Succeeded"), false) => State::Succeeded,
        (Some("Failed"), false) => State::Failed,
        (_, true) => State::Terminating,
        (_, false) => State::Active,
    };
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    Facts {
        state,
        index: index_of(pod),
        finished_at: finished_at(pod),
        ready: podutil::is_ready(pod),
        restarts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn job() -> Job {
        let mut j = Job::default();
        j.metadata.name = Some("pi".into());
        j.metadata.namespace = Some("ns".into());
        j.metadata.uid = Some("u1".into());
        j
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "pi".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                restart_policy: Some("Never".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn nonindexed_pod() {
        let j = job();
        let p = new_pod(&j, &template(), &OwnerInfo::of(&j), None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        let l = p.metadata.labels.expect("labels");
        assert_eq!(l["app"], "pi");
        assert_eq!(l[CONTROLLER_UID], "u1");
        assert_eq!(l[JOB_NAME], "pi");
        assert_eq!(l[LEGACY_CONTROLLER_UID], "u1");
        assert_eq!(l[LEGACY_JOB_NAME], "pi");
        let r = &p.metadata.owner_references.expect("refs")[0];
        assert_eq!(
            (r.kind.as_str(), r.controller, r.block_owner_deletion),
            ("Job", Some(true), Some(true))
        );
        assert!(p.spec.expect("spec").hostname.is_none());
    }

    #[test]
    fn indexed_pod() {
        let j = job();
        let p = new_pod(&j, &template(), &OwnerInfo::of(&j), Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(index_of(&p), Some(2));
        assert_eq!(
            p.metadata.labels.as_ref().expect("labels")[COMPLETION_INDEX],
            "2"
        );
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = spec.containers[0].env.as_ref().expect("env");
        let fr = env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .expect("fieldRef");
        assert_eq!(env[0].name, INDEX_ENV);
        assert_eq!(
            fr.field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
    }

    #[test]
    fn states() {
        let mut p = Pod::default();
        assert_eq!(facts(&p).state, State::Active);
        p.status = Some(Default::default());
        p.status.as_mut().expect("status").phase = Some("Failed".into());
        assert_eq!(facts(&p).state, State::Failed);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(facts(&p).state, State::Gone);
        p.status.as_mut().expect("status").phase = Some("Running".into());
        assert_eq!(facts(&p).state, State::Terminating);
    }
}
