//! Deployment status and conditions as pure functions: upstream's `calculateStatus`, the
//! Progressing/Available condition logic of `syncRolloutStatus`, `DeploymentComplete`,
//! `DeploymentProgressing`, `DeploymentTimedOut` and `requeueStuckDeployment`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::util::{
    actual_count, available_count, max_unavailable, ready_count, replica_count, replicas,
};

/// Reason: a new ReplicaSet was created.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
/// Reason: an existing ReplicaSet matches the template.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// Reason: the rollout moved forward.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// Reason: the rollout finished.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Reason: no progress within `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// Reason: paused.
pub const PAUSED: &str = "DeploymentPaused";
/// Reason: resumed.
pub const RESUMED: &str = "DeploymentResumed";
/// Reason: creating the new ReplicaSet failed.
pub const RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
/// Available reason: enough pods.
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
/// Available reason: too few pods.
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// A condition stamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of `type_`.
pub fn get<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// upstream `SetDeploymentCondition`: no-op for the same status and reason; keeps the
/// transition time when only the reason changes.
pub fn set(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove(s, &c.type_);
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

/// Removes the condition of `type_`.
pub fn remove(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            s.conditions = None;
        }
    }
}

/// `progressDeadlineSeconds`, unless unset or MaxInt32.
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// Status counts with zeros as absent, as upstream's `omitempty` serializes them.
pub fn normalize(s: &DeploymentStatus) -> DeploymentStatus {
    let f = |v: Option<i32>| v.and_then(nz);
    DeploymentStatus {
        available_replicas: f(s.available_replicas),
        collision_count: s.collision_count,
        conditions: s.conditions.clone().filter(|c| !c.is_empty()),
        observed_generation: s.observed_generation.filter(|g| *g != 0),
        ready_replicas: f(s.ready_replicas),
        replicas: f(s.replicas),
        terminating_replicas: None,
        unavailable_replicas: f(s.unavailable_replicas),
        updated_replicas: f(s.updated_replicas),
    }
}

/// The status as a merge patch body (absent fields are removed).
pub fn to_patch(s: &DeploymentStatus) -> Value {
    let s = normalize(s);
    json!({"status": {
        "availableReplicas": s.available_replicas,
        "collisionCount": s.collision_count,
        "conditions": s.conditions,
        "observedGeneration": s.observed_generation,
        "readyReplicas": s.ready_replicas,
        "replicas": s.replicas,
        "unavailableReplicas": s.unavailable_replicas,
        "updatedReplicas": s.updated_replicas,
    }})
}

/// upstream `calculateStatus`: counts over all ReplicaSets and the Available condition.
pub fn calculate(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available = available_count(all);
    let total = replica_count(all);
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_count(all)),
        updated_replicas: Some(new_rs.map_or(0, |r| actual_count(&[r]))),
        ready_replicas: Some(ready_count(all)),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set(
            &mut s,
            condition(
                "Available",
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set(
            &mut s,
            condition(
                "Available",
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    normalize(&s)
}

fn count(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// upstream `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    count(s.updated_replicas) == r
        && count(s.replicas) == r
        && count(s.available_replicas) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// upstream `DeploymentProgressing`: more updated, fewer old, more ready or more available
/// replicas than the current status says.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// upstream `DeploymentTimedOut`.
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = get(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// upstream `syncRolloutStatus` minus the write: the new status with Progressing estimated and
/// the ReplicaSets' failure condition carried over.
pub fn rollout_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut s = calculate(d, all, new_rs, now);
    if progress_deadline(d).is_none() {
        remove(&mut s, "Progressing");
    }
    let current = d
        .status
        .as_ref()
        .and_then(|st| get(st, "Progressing"))
        .cloned();
    let is_complete = s.replicas == s.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    let new_name = new_rs.and_then(|r| r.metadata.name.clone());
    let dname = d.metadata.name.clone().unwrap_or_default();
    if progress_deadline(d).is_some() && !is_complete {
        if complete(d, &s) {
            let msg = match &new_name {
                Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                None => format!("Deployment \"{dname}\" has successfully progressed."),
            };
            set(
                &mut s,
                condition("Progressing", "True", NEW_RS_AVAILABLE, msg, now),
            );
        } else if progressing(d, &s) {
            let msg = match &new_name {
                Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                None => format!("Deployment \"{dname}\" is progressing."),
            };
            let mut c = condition("Progressing", "True", RS_UPDATED, msg, now);
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove(&mut s, "Progressing");
            }
            set(&mut s, c);
        } else if timed_out(d, &s, now) {
            let msg = match &new_name {
                Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                None => format!("Deployment \"{dname}\" has timed out progressing."),
            };
            set(
                &mut s,
                condition("Progressing", "False", TIMED_OUT, msg, now),
            );
        }
    }
    match replica_failure(all, new_rs, now) {
        Some(c) => set(&mut s, c),
        None => remove(&mut s, "ReplicaFailure"),
    }
    normalize(&s)
}

/// The first ReplicaFailure=True condition of the new ReplicaSet, else of an old one.
fn replica_failure(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> Option<DeploymentCondition> {
    let of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            .map(|c| DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: Some(Time(now)),
                last_transition_time: c.last_transition_time.clone().or(Some(Time(now))),
            })
    };
    new_rs
        .and_then(of)
        .or_else(|| all.iter().find_map(|r| of(r)))
}

/// upstream `requeueStuckDeployment`: when to look again for a timeout, if the rollout is
/// neither complete nor timed out.
pub fn requeue_stuck(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let cur = d.status.as_ref().and_then(|s| get(s, "Progressing"))?;
    if complete(d, new) || cur.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let updated = cur.last_update_time.as_ref()?.0.as_second();
    let after = updated + i64::from(deadline) - now.as_second();
    Some(Duration::from_secs(after.max(1) as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn d(replicas: i32, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.generation = Some(2);
        d.spec = Some(DeploymentSpec {
            replicas: Some(replicas),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        });
        d.status = Some(status);
        d
    }

    fn st(replicas: i32, updated: i32, ready: i32, available: i32, gen: i64) -> DeploymentStatus {
        DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            observed_generation: Some(gen),
            ..Default::default()
        }
    }

    /// upstream `TestDeploymentComplete`.
    #[test]
    fn complete_table() {
        let cases = [
            (
                "not complete: min but not all pods become available",
                5,
                st(5, 5, 5, 4, 2),
                false,
            ),
            (
                "not complete: min availability is not honored",
                5,
                st(5, 5, 5, 3, 2),
                false,
            ),
            ("complete", 5, st(5, 5, 5, 5, 2), true),
            (
                "not complete: all pods are available but not updated",
                5,
                st(5, 4, 5, 5, 2),
                false,
            ),
            (
                "not complete: still running old pods",
                1,
                st(2, 1, 2, 2, 2),
                false,
            ),
            (
                "not complete: one replica deployment never comes up",
                1,
                st(1, 1, 0, 0, 2),
                false,
            ),
            (
                "not complete: old generation observed",
                1,
                st(1, 1, 1, 1, 1),
                false,
            ),
        ];
        for (name, r, s, want) in cases {
            assert_eq!(
                complete(&d(r, DeploymentStatus::default()), &s),
                want,
                "{name}"
            );
        }
    }

    /// upstream `TestDeploymentProgressing`.
    #[test]
    fn progressing_table() {
        let cases = [
            (
                "progressing: updated pods",
                st(10, 4, 4, 4, 2),
                st(10, 6, 4, 4, 2),
                true,
            ),
            (
                "not progressing",
                st(10, 6, 4, 4, 2),
                st(10, 6, 4, 4, 2),
                false,
            ),
            (
                "progressing: old pods removed",
                st(10, 6, 4, 4, 2),
                st(8, 6, 4, 4, 2),
                true,
            ),
            (
                "not progressing: less new pods",
                st(10, 7, 4, 4, 2),
                st(10, 6, 4, 4, 2),
                false,
            ),
            (
                "progressing: less overall but more new pods",
                st(10, 6, 4, 4, 2),
                st(8, 8, 4, 4, 2),
                true,
            ),
            (
                "progressing: more ready pods",
                st(10, 10, 4, 4, 2),
                st(10, 10, 5, 4, 2),
                true,
            ),
            (
                "progressing: more available pods",
                st(10, 10, 4, 4, 2),
                st(10, 10, 4, 5, 2),
                true,
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(progressing(&d(10, old), &new), want, "{name}");
        }
    }

    /// upstream `TestDeploymentTimedOut`.
    #[test]
    fn timed_out_table() {
        let with = |reason: &str, updated: i64| DeploymentStatus {
            conditions: Some(vec![condition(
                "Progressing",
                "True",
                reason,
                String::new(),
                ts(updated),
            )]),
            ..Default::default()
        };
        let now = ts(10_000);
        let cases = [
            (
                "no timeout: last update recent",
                with(RS_UPDATED, 9_500),
                false,
            ),
            (
                "timeout: last update older than deadline",
                with(RS_UPDATED, 9_000),
                true,
            ),
            ("no timeout: complete", with(NEW_RS_AVAILABLE, 1), false),
            ("already timed out", with(TIMED_OUT, 9_999), true),
        ];
        for (name, s, want) in cases {
            assert_eq!(
                timed_out(&d(1, DeploymentStatus::default()), &s, now),
                want,
                "{name}"
            );
        }
    }

    fn rs(name: &str, spec: i32, status: i32, available: i32) -> ReplicaSet {
        let mut r = ReplicaSet::default();
        r.metadata.name = Some(name.into());
        r.spec = Some(ReplicaSetSpec {
            replicas: Some(spec),
            ..Default::default()
        });
        r.status = Some(ReplicaSetStatus {
            replicas: status,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
        r
    }

    #[test]
    fn rollout_status_conditions() {
        let now = ts(1000);
        // Mid-rollout: progressing.
        let dep = d(3, st(3, 0, 3, 3, 2));
        let (old, new) = (rs("web-a", 2, 3, 3), rs("web-b", 1, 1, 0));
        let s = rollout_status(&dep, &[&old, &new], Some(&new), now);
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(1));
        assert_eq!(s.unavailable_replicas, None);
        let p = get(&s, "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-b\" is progressing.")
        );
        assert_eq!(
            get(&s, "Available").unwrap().reason.as_deref(),
            Some(MIN_AVAILABLE)
        );
        // Done: complete.
        let dep = d(3, st(4, 1, 3, 3, 2));
        let (old, new) = (rs("web-a", 0, 0, 0), rs("web-b", 3, 3, 3));
        let s = rollout_status(&dep, &[&old, &new], Some(&new), now);
        let p = get(&s, "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-b\" has successfully progressed.")
        );
        assert_eq!(s.unavailable_replicas, None);
        // Too few available.
        let dep = d(3, st(3, 3, 3, 3, 2));
        let new = rs("web-b", 3, 3, 1);
        let s = rollout_status(&dep, &[&new], Some(&new), now);
        assert_eq!(get(&s, "Available").unwrap().status, "False");
        assert_eq!(
            get(&s, "Available").unwrap().reason.as_deref(),
            Some(MIN_UNAVAILABLE)
        );
    }
}
