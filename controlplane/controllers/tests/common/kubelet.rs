//! TEST FIXTURE, not a node agent: plays scheduler and kubelet for pods so controllers see them
//! become Running/Ready without VMs. It binds unbound pods to `fake-node` (or, for pods pinned
//! by a required node affinity `matchFields` `metadata.name In [n]` as DaemonSet pods are, to
//! `n`, whether or not such a Node exists), marks bound Pending
//! pods Running + Ready with a pod IP after a short delay, and finishes graceful deletions by
//! deleting with grace 0. (Simulated nodes from the scheduler crate's `sim` module replace it.)
//!
//! Pods that should end (Job pods) say how: the annotation [`EXIT`] = `"<ms>:<code>"` ends a
//! pod that many milliseconds after it turned Running, Succeeded for code 0 and Failed
//! otherwise, with every container terminated with that exit code; a pod whose restartPolicy
//! is not Always and whose first container's command ends in `exit <code>` (as `kubectl
//! create job x --image=i -- sh -c 'exit 0'` makes) ends the same way after [`EXIT_DELAY`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The node every pod lands on.
pub const NODE: &str = "fake-node";
/// Delay before a bound pod turns Running/Ready.
pub const START_DELAY: Duration = Duration::from_millis(200);
/// Annotation `"<ms>:<exit code>"`: end the pod that long after it runs.
pub const EXIT: &str = "kennel.test/exit";
/// How long a pod ending by its `exit <code>` command runs.
pub const EXIT_DELAY: Duration = Duration::from_millis(300);

/// How (after how long, with which exit code) `pod` ends, if it does.
pub fn planned_exit(pod: &Pod) -> Option<(Duration, i32)> {
    if let Some(v) = pod.annotations().get(EXIT) {
        let (ms, code) = v.split_once(':')?;
        return Some((Duration::from_millis(ms.parse().ok()?), code.parse().ok()?));
    }
    let spec = pod.spec.as_ref()?;
    if spec.restart_policy.as_deref().unwrap_or("Always") == "Always" {
        return None;
    }
    let c = spec.containers.first()?;
    let words: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .flat_map(|w| w.split_whitespace())
        .collect();
    match words.as_slice() {
        [.., "exit", code] => Some((EXIT_DELAY, code.parse().ok()?)),
        _ => None,
    }
}

/// The node a pod is pinned to by `matchFields` `metadata.name In [node]`, else [`NODE`].
pub fn bind_target(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flat_map(|s| s.node_selector_terms.iter())
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
        .unwrap_or_else(|| NODE.to_string())
}

/// Ends `name` with `code` after `after`.
async fn finish(api: Api<Pod>, name: String, containers: Vec<String>, after: Duration, code: i32) {
    tokio::time::sleep(after).await;
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let statuses: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| {
            json!({"name": c, "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now}}})
        })
        .collect();
    let status = json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "containerStatuses": statuses,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "lastTransitionTime": now},
        ],
    }});
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}

/// Runs until aborted.
pub async fn run(client: Client) {
    let all: Api<Pod> = Api::all(client.clone());
    let ips = Arc::new(AtomicU32::new(2));
    let stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            tokio::spawn(async move {
                let _ = api.delete(&name, &dp).await;
            });
        } else if node.is_none() {
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name}, "target": {"kind": "Node", "name": bind_target(&pod)}});
            tokio::spawn(async move {
                let _ = api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await;
            });
        } else if phase.as_deref() == Some("Pending") {
            let n = ips.fetch_add(1, Ordering::SeqCst);
            let exit = planned_exit(&pod);
            let containers: Vec<String> = pod
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(START_DELAY).await;
                let now = k8s_openapi::jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let ip = format!("10.244.{}.{}", n / 250, n % 250 + 2);
                let status = json!({"status": {
                    "phase": "Running",
                    "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
                    "startTime": now,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ],
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                if let Some((after, code)) = exit {
                    finish(api, name, containers, after, code).await;
                }
            });
        }
    }
}
