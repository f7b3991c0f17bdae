//! What the scheduler writes besides bindings: the `PodScheduled=False/Unschedulable` condition
//! (status subresource, only when it changed), `nominatedNodeName`, and core/v1 events
//! (`Scheduled`, `FailedScheduling`, `Preempted`) from `default-scheduler`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The component name on events.
pub const COMPONENT: &str = "default-scheduler";

/// The PodScheduled=False reason for a pod that fits no node.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// The PodScheduled=False reason for any other scheduling failure (reserve, pre-bind, bind),
/// as upstream's `v1.PodReasonSchedulerError`.
pub const REASON_SCHEDULER_ERROR: &str = "SchedulerError";

/// Whether the pod already carries `PodScheduled=False/Unschedulable` with `message`.
pub fn condition_is(pod: &Pod, message: &str) -> bool {
    condition_with_reason_is(pod, REASON_UNSCHEDULABLE, message)
}

/// Whether the pod already carries `PodScheduled=False/<reason>` with `message`.
pub fn condition_with_reason_is(pod: &Pod, reason: &str, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        })
}

/// The pod's conditions with PodScheduled replaced by `False/Unschedulable/message`
/// (keeping lastTransitionTime when it was already False).
pub fn unschedulable_conditions(pod: &Pod, message: &str) -> Vec<PodCondition> {
    not_scheduled_conditions(pod, REASON_UNSCHEDULABLE, message)
}

/// The pod's conditions with PodScheduled replaced by `False/<reason>/message` (keeping
/// lastTransitionTime when it was already False).
pub fn not_scheduled_conditions(pod: &Pod, reason: &str, message: &str) -> Vec<PodCondition> {
    let mut conds: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let prev = conds.iter().position(|c| c.type_ == "PodScheduled");
    let transition = prev
        .and_then(|i| (conds[i].status == "False").then(|| conds[i].last_transition_time.clone()))
        .flatten()
        .unwrap_or_else(|| Time(Timestamp::now()));
    let c = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(transition),
        last_probe_time: None,
        observed_generation: None,
    };
    match prev {
        Some(i) => conds[i] = c,
        None => conds.push(c),
    }
    conds
}

/// The last FailedScheduling event of a pod: name, namespace, message, count.
type EventSeries = (String, String, String, i32);

/// Writes events and pod status for one scheduler instance.
#[derive(Clone)]
pub struct Reporter {
    client: kube::Client,
    instance: String,
    /// Last FailedScheduling event per pod uid: (event name, namespace, message, count).
    last_failed: Arc<Mutex<HashMap<String, EventSeries>>>,
}

impl Reporter {
    /// A reporter writing as `instance`.
    pub fn new(client: kube::Client, instance: &str) -> Self {
        Self {
            client,
            instance: instance.to_string(),
            last_failed: Arc::default(),
        }
    }

    /// Sets PodScheduled=False/Unschedulable (and `nominatedNodeName` when given) unless the pod
    /// already says so.
    pub async fn unschedulable(&self, pod: &Pod, message: &str, nominated: Option<&str>) {
        self.not_scheduled(pod, REASON_UNSCHEDULABLE, message, nominated)
            .await
    }

    /// Sets PodScheduled=False/SchedulerError with `message` (a reserve, pre-bind or bind
    /// failure) unless the pod already says so.
    pub async fn scheduler_error(&self, pod: &Pod, message: &str) {
        self.not_scheduled(pod, REASON_SCHEDULER_ERROR, message, None)
            .await
    }

    async fn not_scheduled(&self, pod: &Pod, reason: &str, message: &str, nominated: Option<&str>) {
        let nominated_now = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref());
        if condition_with_reason_is(pod, reason, message)
            && (nominated.is_none() || nominated == nominated_now)
        {
            return;
        }
        let mut status = json!({"conditions": not_scheduled_conditions(pod, reason, message)});
        if let Some(n) = nominated {
            status["nominatedNodeName"] = json!(n);
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            tracing::debug!(pod = %name, "writing PodScheduled condition: {e}");
        }
    }

    fn reference(pod: &Pod) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        }
    }

    /// Creates a core/v1 event about `pod`.
    pub async fn event(
        &self,
        pod: &Pod,
        type_: &str,
        reason: &str,
        action: &str,
        message: &str,
    ) -> Option<String> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            pod.metadata.name.as_deref().unwrap_or("pod"),
            now.as_nanosecond()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: Self::reference(pod),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => Some(name),
            Err(e) => {
                tracing::debug!("event {reason}: {e}");
                None
            }
        }
    }

    /// `Scheduled`: `Successfully assigned <ns>/<pod> to <node>`.
    pub async fn scheduled(&self, pod: &Pod, node: &str) {
        let msg = format!(
            "Successfully assigned {}/{} to {node}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        if let Some(uid) = &pod.metadata.uid {
            self.last_failed.lock().expect("events lock").remove(uid);
        }
        self.event(pod, "Normal", "Scheduled", "Binding", &msg)
            .await;
    }

    /// `FailedScheduling` with `message`; a repeat of the same message bumps the count of the
    /// previous event instead of creating a new one (as the event correlator does).
    pub async fn failed(&self, pod: &Pod, message: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let prev = self
            .last_failed
            .lock()
            .expect("events lock")
            .get(&uid)
            .cloned();
        if let Some((name, ns, msg, count)) = prev {
            if msg == message {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
                let patch = json!({"count": count + 1, "lastTimestamp": Time(Timestamp::now())});
                if api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    self.last_failed
                        .lock()
                        .expect("events lock")
                        .insert(uid, (name, ns, msg, count + 1));
                    return;
                }
            }
        }
        if let Some(name) = self
            .event(pod, "Warning", "FailedScheduling", "Scheduling", message)
            .await
        {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            self.last_failed
                .lock()
                .expect("events lock")
                .insert(uid, (name, ns, message.to_string(), 1));
        }
    }

    /// Forgets the event series of a deleted pod.
    pub fn forget(&self, uid: &str) {
        self.last_failed.lock().expect("events lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m1", "lastTransitionTime": "2024-01-01T00:00:00Z"},
        ]}})).unwrap();
        assert!(condition_is(&pod, "m1"));
        assert!(!condition_is(&pod, "m2"));
        let c = unschedulable_conditions(&pod, "m2");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].message.as_deref(), Some("m2"));
        assert_eq!(
            c[0].last_transition_time.as_ref().unwrap().0.to_string(),
            "2024-01-01T00:00:00Z"
        );
        let fresh: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert!(!condition_is(&fresh, "m1"));
        assert_eq!(unschedulable_conditions(&fresh, "m1").len(), 1);
    }
}
