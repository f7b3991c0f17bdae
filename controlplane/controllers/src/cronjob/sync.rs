//! One CronJob sync (upstream's `syncCronJob`): reconcile `status.active` with the Jobs it owns,
//! record `lastSuccessfulTime`, prune history, then start the most recent missed run (unless
//! suspended, too late for `startingDeadlineSeconds`, or forbidden by `concurrencyPolicy`),
//! and say when the next run is due.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use super::plan::{self, Concurrency, Finished};
use super::schedule::{self, Schedule, MAX_MISSED};
use super::CronJobError;
use crate::claim::OwnerInfo;
use crate::ctx::Ctx;
use crate::job::status as job_status;

/// The annotation naming the time a Job was scheduled for (RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A `metav1.Time` as chrono.
pub fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), 0).unwrap_or_default()
}

/// A chrono time as `metav1.Time`.
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Job for a run of `cj` scheduled at `at`.
pub fn job_for(cj: &CronJob, at: DateTime<Utc>) -> Job {
    let tpl = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = tpl.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(schedule::job_name(&cj.name_any(), at)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerInfo::of(cj).controller_ref()]),
            ..Default::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), CronJobError> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(CronJobError::Api {
            what: format!("delete job {name}"),
            source,
        }),
    }
}

/// Syncs `cj` at `now`; returns when to look again.
pub async fn sync(
    cj: &CronJob,
    ctx: &Ctx,
    now: DateTime<Utc>,
) -> Result<Option<Duration>, CronJobError> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(None);
    };
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.meta().uid.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = ctx.jobs.owned_by(&uid);
    let old = cj.status.clone().unwrap_or_default();
    let mut st: CronJobStatus = old.clone();

    // status.active: exactly the owned Jobs not finished.
    let mut active: Vec<ObjectReference> = Vec::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut last_success = st.last_successful_time.as_ref().map(|t| t.0);
    for j in &owned {
        let js = j.status.clone().unwrap_or_default();
        if job_status::is_finished(&js) {
            let succeeded = job_status::is_true(&js, "Complete");
            if succeeded {
                if let Some(t) = js.completion_time.as_ref().map(|t| t.0) {
                    last_success = Some(last_success.map_or(t, |l| l.max(t)));
                }
            }
            finished.push(Finished {
                name: j.name_any(),
                started: js
                    .start_time
                    .as_ref()
                    .or(j.metadata.creation_timestamp.as_ref())
                    .map_or(0, |t| t.0.as_second()),
                succeeded,
            });
        } else if j.metadata.deletion_timestamp.is_none() {
            active.push(reference(j));
        }
    }
    active.sort_by(|a, b| a.name.cmp(&b.name));
    st.last_successful_time = last_success.map(Time);

    // History limits.
    for name in plan::prune(
        &finished,
        spec.successful_jobs_history_limit.unwrap_or(3),
        spec.failed_jobs_history_limit.unwrap_or(1),
    ) {
        delete_job(&jobs_api, &name).await?;
        ctx.event(cj, false, "SuccessfulDelete", format!("Deleted job {name}"));
    }

    let mut requeue = None;
    if cj.metadata.deletion_timestamp.is_none() {
        match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
            Err(e) => {
                ctx.event(cj, true, "UnparseableSchedule", e.to_string());
            }
            Ok(sched) => {
                requeue = sched
                    .next_after(now)
                    .map(|n| (n - now).to_std().unwrap_or_default() + Duration::from_millis(100));
                if spec.suspend != Some(true) {
                    run_due(cj, ctx, &sched, &jobs_api, &mut st, &mut active, now).await?;
                }
            }
        }
    }
    st.active = (!active.is_empty()).then_some(active);
    if st != old {
        let patch = serde_json::json!({"status": {
            "active": st.active,
            "lastScheduleTime": st.last_schedule_time,
            "lastSuccessfulTime": st.last_successful_time,
        }});
        cj_api
            .patch_status(
                &cj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(CronJobError::Status)?;
    }
    Ok(requeue)
}

/// Starts the most recent missed run, if one is due and allowed.
async fn run_due(
    cj: &CronJob,
    ctx: &Ctx,
    sched: &Schedule,
    jobs_api: &Api<Job>,
    st: &mut CronJobStatus,
    active: &mut Vec<ObjectReference>,
    now: DateTime<Utc>,
) -> Result<(), CronJobError> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(());
    };
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| to_chrono(t.0));
    let last = st.last_schedule_time.as_ref().map(|t| to_chrono(t.0));
    let earliest = schedule::earliest(last, created, spec.starting_deadline_seconds, now);
    let (Some(at), missed) = sched.most_recent(earliest, now) else {
        return Ok(());
    };
    if missed > MAX_MISSED {
        ctx.event(
            cj,
            true,
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        );
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if at + chrono::Duration::seconds(sds) < now {
            ctx.event(
                cj,
                true,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", at.to_rfc3339()),
            );
            return Ok(());
        }
    }
    match plan::concurrency(spec.concurrency_policy.as_deref(), active.len()) {
        Concurrency::Skip => {
            ctx.event(cj, false, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into());
            return Ok(());
        }
        Concurrency::ReplaceThenCreate => {
            for r in active.drain(..) {
                let name = r.name.unwrap_or_default();
                delete_job(jobs_api, &name).await?;
                ctx.event(cj, false, "SuccessfulDelete", format!("Deleted job {name}"));
            }
        }
        Concurrency::Create => {}
    }
    let job = job_for(cj, at);
    let name = job.name_any();
    match jobs_api.create(&PostParams::default(), &job).await {
        Ok(made) => {
            ctx.event(cj, false, "SuccessfulCreate", format!("Created job {name}"));
            if !active
                .iter()
                .any(|r| r.name.as_deref() == Some(name.as_str()))
            {
                active.push(reference(&made));
            }
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Already made for this time (our stale cache, or a restart): nothing to redo.
            tracing::debug!(job = %name, "already exists");
        }
        Err(source) => {
            ctx.event(
                cj,
                true,
                "FailedCreate",
                format!("Error creating job: {source}"),
            );
            return Err(CronJobError::Api {
                what: format!("create job {name}"),
                source,
            });
        }
    }
    st.last_schedule_time = Some(to_time(at));
    Ok(())
}
