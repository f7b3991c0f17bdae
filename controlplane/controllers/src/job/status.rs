//! Job status: conditions as upstream sets them (`Suspended`, `FailureTarget`, `Failed`,
//! `SuccessCriteriaMet`, `Complete`) and the merge patch that writes a changed status.

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

/// Whether condition `type_` is True.
pub fn is_true(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job is finished (Complete or Failed True).
pub fn is_finished(status: &JobStatus) -> bool {
    is_true(status, "Complete") || is_true(status, "Failed")
}

/// When the Job finished: `completionTime`, else the finishing condition's transition time.
pub fn finished_at(status: &JobStatus) -> Option<Timestamp> {
    if let Some(t) = &status.completion_time {
        return Some(t.0);
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Sets condition `type_` (upstream's `ensureJobConditionStatus`): the transition time moves
/// only when the status changes; an absent False condition is not added.
pub fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let value_s = if value { "True" } else { "False" };
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != value_s || c.reason.as_deref() != Some(reason) {
            if c.status != value_s {
                c.last_transition_time = Some(Time(now));
            }
            c.status = value_s.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = Some(Time(now));
        }
        return;
    }
    if !value {
        return;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: value_s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// The merge patch turning `old` into `new` (fields gone in `new` are nulled), or `None` when
/// nothing changed.
pub fn patch(old: &JobStatus, new: &JobStatus) -> Option<Value> {
    if old == new {
        return None;
    }
    let as_map = |s: &JobStatus| match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let (old_m, mut new_m) = (as_map(old), as_map(new));
    for k in old_m.keys() {
        if !new_m.contains_key(k) {
            new_m.insert(k.clone(), Value::Null);
        }
    }
    Some(serde_json::json!({ "status": new_m }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("time")
    }

    #[test]
    fn conditions_move_only_on_change() {
        let mut st = JobStatus::default();
        set_condition(&mut st, "Suspended", false, "JobResumed", "", t(1));
        assert!(st.conditions.as_ref().is_some_and(Vec::is_empty));
        set_condition(
            &mut st,
            "Suspended",
            true,
            "JobSuspended",
            "Job suspended",
            t(2),
        );
        set_condition(
            &mut st,
            "Suspended",
            true,
            "JobSuspended",
            "Job suspended",
            t(3),
        );
        let c = &st.conditions.as_ref().expect("conds")[0];
        assert_eq!(c.last_transition_time, Some(Time(t(2))));
        assert!(is_true(&st, "Suspended"));
        set_condition(
            &mut st,
            "Suspended",
            false,
            "JobResumed",
            "Job resumed",
            t(4),
        );
        assert!(!is_true(&st, "Suspended"));
        let c = &st.conditions.as_ref().expect("conds")[0];
        assert_eq!(c.last_transition_time, Some(Time(t(4))));
    }

    #[test]
    fn finish_time_and_patch() {
        let mut st = JobStatus {
            active: Some(1),
            start_time: Some(Time(t(5))),
            ..Default::default()
        };
        assert!(!is_finished(&st));
        let old = st.clone();
        assert!(patch(&old, &st).is_none());
        st.active = None;
        set_condition(&mut st, "Failed", true, "DeadlineExceeded", "late", t(9));
        assert!(is_finished(&st));
        assert_eq!(finished_at(&st), Some(t(9)));
        let p = patch(&old, &st).expect("patch");
        assert_eq!(p["status"]["active"], Value::Null);
        assert_eq!(p["status"]["conditions"][0]["reason"], "DeadlineExceeded");
    }
}
