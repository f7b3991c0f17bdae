//! ReplicaSet/ReplicationController status as upstream's `calculateStatus`: counts over the
//! claimed active pods, and the ReplicaFailure condition while creating or deleting fails.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::podutil::{is_available, is_ready};

/// The status fields the controller owns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    /// Claimed active pods.
    pub replicas: i32,
    /// Of those, pods carrying every template label.
    pub fully_labeled: i32,
    /// Of those, ready pods.
    pub ready: i32,
    /// Of those, pods ready for `minReadySeconds`.
    pub available: i32,
    /// The generation this status describes.
    pub observed_generation: i64,
    /// All conditions (ReplicaFailure is ours, others are kept).
    pub conditions: Vec<Value>,
}

fn int(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or(0)
}

impl ReplicaStatus {
    /// Parses a status object (missing counts are 0).
    pub fn from_json(v: &Value) -> Self {
        Self {
            replicas: int(v, "replicas") as i32,
            fully_labeled: int(v, "fullyLabeledReplicas") as i32,
            ready: int(v, "readyReplicas") as i32,
            available: int(v, "availableReplicas") as i32,
            observed_generation: int(v, "observedGeneration"),
            conditions: v["conditions"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// The status as a merge patch body (a removed last condition is removed too).
    pub fn to_patch(&self) -> Value {
        json!({"status": {
            "replicas": self.replicas,
            "fullyLabeledReplicas": self.fully_labeled,
            "readyReplicas": self.ready,
            "availableReplicas": self.available,
            "observedGeneration": self.observed_generation,
            "conditions": if self.conditions.is_empty() { Value::Null } else { json!(self.conditions) },
        }})
    }
}

/// Why managing replicas failed: `FailedCreate` or `FailedDelete`, and the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

/// Computes the status from the claimed active `pods`.
pub fn calculate(
    old: &ReplicaStatus,
    generation: i64,
    template_labels: &BTreeMap<String, String>,
    min_ready_seconds: i32,
    pods: &[&Pod],
    failure: Option<&Failure>,
    now: Timestamp,
) -> ReplicaStatus {
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            let l = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let available = pods
        .iter()
        .filter(|p| is_available(p, min_ready_seconds, now))
        .count();
    let mut conditions = old.conditions.clone();
    let existing = conditions
        .iter()
        .position(|c| c["type"] == "ReplicaFailure");
    match (failure, existing) {
        (Some(f), None) => conditions.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": f.reason,
            "message": f.message,
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        })),
        (None, Some(i)) => {
            conditions.remove(i);
        }
        _ => {}
    }
    ReplicaStatus {
        replicas: pods.len() as i32,
        fully_labeled: fully_labeled as i32,
        ready: ready as i32,
        available: available as i32,
        observed_generation: generation,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(labels: &[(&str, &str)], ready_at: Option<i64>) -> Pod {
        let mut p = Pod::default();
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn counts_and_failure_condition() {
        let tpl: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("v".to_string(), "1".to_string()),
        ]
        .into();
        let pods = [
            pod(&[("app", "web"), ("v", "1")], Some(100)),
            pod(&[("app", "web"), ("v", "1")], Some(195)),
            pod(&[("app", "web")], None),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let now = Timestamp::from_second(200).unwrap();
        let f = Failure {
            reason: "FailedCreate",
            message: "pods \"x\" is forbidden: quota".into(),
        };
        let s = calculate(&ReplicaStatus::default(), 3, &tpl, 10, &refs, Some(&f), now);
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled,
                s.ready,
                s.available,
                s.observed_generation
            ),
            (3, 2, 2, 1, 3)
        );
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0]["reason"], "FailedCreate");
        // The condition stays while failing and goes once managing succeeds.
        let again = calculate(&s, 3, &tpl, 10, &refs, Some(&f), now);
        assert_eq!(again.conditions, s.conditions);
        let ok = calculate(&s, 3, &tpl, 10, &refs, None, now);
        assert!(ok.conditions.is_empty());
        assert_eq!(ReplicaStatus::from_json(&ok.to_patch()["status"]), ok);
    }
}
