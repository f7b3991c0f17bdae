//! StatefulSet status as upstream's `updateStatus` + `completeRollingUpdate`: counts over the
//! set's pods, and the current revision catching up with the update revision once a rolling
//! update has replaced and readied every pod.

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::identity::REVISION_LABEL;
use crate::podutil::{is_available, is_ready};

/// Inputs beyond the pods.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// RollingUpdate strategy (the current revision may advance).
    pub rolling: bool,
    /// Current revision name.
    pub current_revision: &'a str,
    /// Update revision name.
    pub update_revision: &'a str,
    /// `status.collisionCount`.
    pub collision_count: Option<i32>,
}

fn running_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && is_ready(p)
}

/// Computes the status over all pods of the set (replicas and condemned).
pub fn calculate(input: &StatusInput<'_>, pods: &[&Pod], now: Timestamp) -> StatefulSetStatus {
    let mut st = StatefulSetStatus {
        observed_generation: Some(input.generation),
        collision_count: input.collision_count,
        current_revision: Some(input.current_revision.to_string()),
        update_revision: Some(input.update_revision.to_string()),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in pods {
        st.replicas += 1;
        if running_ready(p) {
            ready += 1;
            if is_available(p, input.min_ready_seconds, now) {
                available += 1;
            }
        }
        if p.metadata.deletion_timestamp.is_none() {
            let rev = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL));
            if rev.map(String::as_str) == Some(input.current_revision) {
                current += 1;
            }
            if rev.map(String::as_str) == Some(input.update_revision) {
                updated += 1;
            }
        }
    }
    if input.rolling && updated == st.replicas && ready == st.replicas {
        current = updated;
        st.current_revision = st.update_revision.clone();
    }
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(current);
    st.updated_replicas = Some(updated);
    st
}

fn zero(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Whether `new` changes any field the controller owns in `old`.
pub fn differs(old: Option<&StatefulSetStatus>, new: &StatefulSetStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    old.replicas != new.replicas
        || zero(old.ready_replicas) != zero(new.ready_replicas)
        || zero(old.available_replicas) != zero(new.available_replicas)
        || zero(old.current_replicas) != zero(new.current_replicas)
        || zero(old.updated_replicas) != zero(new.updated_replicas)
        || old.observed_generation != new.observed_generation
        || old.current_revision != new.current_revision
        || old.update_revision != new.update_revision
        || old.collision_count != new.collision_count
}

/// The merge patch writing `st` (conditions untouched).
pub fn to_patch(st: &StatefulSetStatus) -> Value {
    json!({"status": {
        "observedGeneration": st.observed_generation,
        "replicas": st.replicas,
        "readyReplicas": zero(st.ready_replicas),
        "availableReplicas": zero(st.available_replicas),
        "currentReplicas": zero(st.current_replicas),
        "updatedReplicas": zero(st.updated_replicas),
        "currentRevision": st.current_revision,
        "updateRevision": st.update_revision,
        "collisionCount": st.collision_count,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn pod(rev: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.labels = Some([(REVISION_LABEL.to_string(), rev.to_string())].into());
        p.status = Some(PodStatus {
            phase: Some(if ready { "Running" } else { "Pending" }.into()),
            conditions: ready.then(|| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn counts_and_rollout_completion() {
        let input = StatusInput {
            generation: 2,
            min_ready_seconds: 0,
            rolling: true,
            current_revision: "web-1",
            update_revision: "web-2",
            collision_count: None,
        };
        let now = Timestamp::UNIX_EPOCH;
        let pods = [pod("web-1", true), pod("web-2", true), pod("web-2", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let st = calculate(&input, &refs, now);
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.current_replicas,
                st.updated_replicas
            ),
            (3, Some(2), Some(1), Some(2))
        );
        assert_eq!(st.current_revision.as_deref(), Some("web-1"));
        // All updated and ready: the current revision becomes the update revision.
        let pods = [pod("web-2", true), pod("web-2", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let done = calculate(&input, &refs, now);
        assert_eq!(done.current_revision.as_deref(), Some("web-2"));
        assert_eq!(done.current_replicas, Some(2));
        assert!(differs(Some(&st), &done));
        assert!(!differs(Some(&done), &done.clone()));
        // OnDelete never advances it.
        let od = StatusInput {
            rolling: false,
            ..input
        };
        assert_eq!(
            calculate(&od, &refs, now).current_revision.as_deref(),
            Some("web-1")
        );
    }
}
