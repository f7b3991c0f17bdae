//! One Job sync (upstream's `syncJob`): claim the pods, count them, decide whether the Job has
//! failed (pod failure policy, backoff limit, deadline) or completed, otherwise create and
//! delete pods (NonIndexed or Indexed, after the failure back-off, never while suspended), and
//! write the status when it changed.
//!
//! Counting: finished pods are counted from the pods that exist. The Job controller never
//! deletes a finished pod and the API server's cascade removes them only with the Job, so each
//! is counted exactly once; a finished pod deleted by hand is no longer counted (upstream's
//! `batch.kubernetes.io/job-tracking` finalizer, which prevents that, is not used).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;

use super::pods::{self, Facts, State};
use super::policy::{self, Verdict};
use super::{plan, status, JobError};
use crate::claim::{self, OwnerInfo};
use crate::ctx::{key, Ctx};
use crate::podutil;
use crate::selector::Selector;

/// The selector of `job`'s pods: `spec.selector`, else its controller-uid label.
pub fn selector_of(job: &Job) -> Selector {
    match job.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) if sel.match_labels.is_some() || sel.match_expressions.is_some() => {
            Selector::from_label_selector(sel)
        }
        _ => Selector::from_map(
            &[(
                pods::CONTROLLER_UID.to_string(),
                job.metadata.uid.clone().unwrap_or_default(),
            )]
            .into(),
        ),
    }
}

/// A failed pod and what the failure policy says about it.
struct Failed<'a> {
    facts: &'a Facts,
    verdict: Verdict,
}

/// The decision to end the Job, if any: `(reason, message)`.
fn failure(
    spec: &JobSpec,
    failed: &[Failed<'_>],
    restarts: i32,
    start: Option<i64>,
    now: i64,
) -> Option<(&'static str, String)> {
    if let Some(msg) = failed.iter().find_map(|f| match &f.verdict {
        Verdict::FailJob(m) => Some(m.clone()),
        _ => None,
    }) {
        return Some(("PodFailurePolicy", msg));
    }
    let counted = failed
        .iter()
        .filter(|f| f.verdict == Verdict::Count)
        .count() as i32;
    if plan::past_backoff_limit(counted, restarts, spec.backoff_limit.unwrap_or(6)) {
        return Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ));
    }
    if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, start) {
        if now >= start + ads {
            return Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        }
    }
    None
}

/// Deletes `victims` (uid preconditions, background propagation); how many went.
async fn delete_pods(
    ctx: &Ctx,
    job: &Job,
    api: &Api<Pod>,
    victims: &[&Pod],
) -> Result<i32, JobError> {
    let results = join_all(victims.iter().map(|p| {
        let name = p.name_any();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        async move {
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    ctx.event(
                        job,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    );
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
                Err(source) => {
                    ctx.event(
                        job,
                        true,
                        "FailedDelete",
                        format!("Error deleting: {source}"),
                    );
                    Err(JobError::Api {
                        what: format!("delete pod {name}"),
                        source,
                    })
                }
            }
        }
    }))
    .await;
    let mut n = 0;
    for r in results {
        if r? {
            n += 1;
        }
    }
    Ok(n)
}

/// Creates one pod per entry of `indexes` (`None` for NonIndexed) under expectations; how many
/// were created.
async fn create_pods(
    ctx: &Ctx,
    job: &Job,
    k: &str,
    owner: &OwnerInfo,
    api: &Api<Pod>,
    indexes: &[Option<i32>],
) -> Result<i32, JobError> {
    let Some(template) = job.spec.as_ref().map(|s| &s.template) else {
        return Ok(0);
    };
    ctx.expectations.expect_creations(k, indexes.len());
    let results = join_all(indexes.iter().map(|idx| {
        let pod = pods::new_pod(job, template, owner, *idx);
        async move {
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    ctx.event(
                        job,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {}", created.name_any()),
                    );
                    Ok(())
                }
                Err(source) => {
                    ctx.expectations.creation_observed(k);
                    ctx.event(
                        job,
                        true,
                        "FailedCreate",
                        format!("Error creating: {source}"),
                    );
                    Err(JobError::Api {
                        what: "create pod".into(),
                        source,
                    })
                }
            }
        }
    }))
    .await;
    let mut n = 0;
    for r in results {
        r?;
        n += 1;
    }
    Ok(n)
}

/// Syncs `job`; returns when to look again (besides on changes).
pub async fn sync(job: &Job, ctx: &Arc<Ctx>) -> Result<Option<Duration>, JobError> {
    let Some(spec) = job.spec.as_ref() else {
        return Ok(None);
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let k = key(job);
    let ns = job.namespace().unwrap_or_default();
    let owner = OwnerInfo::of(job);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let candidates = ctx.pods.in_namespace(&ns);
    let claimed = claim::claim(&pods_api, &owner, &selector_of(job), candidates, || {
        claim::recheck_owner(&jobs_api, &owner)
    })
    .await?;
    let facts: Vec<Facts> = claimed.iter().map(|p| pods::facts(p)).collect();
    let active: Vec<(&Pod, &Facts)> = claimed
        .iter()
        .zip(&facts)
        .filter(|(_, f)| f.state == State::Active)
        .map(|(p, f)| (&**p, f))
        .collect();
    let old = job.status.clone().unwrap_or_default();
    if status::is_finished(&old) {
        // Finished: anything still running goes (e.g. after a restart of the controller).
        let victims: Vec<&Pod> = active.iter().map(|(p, _)| *p).collect();
        delete_pods(ctx, job, &pods_api, &victims).await?;
        return Ok(None);
    }
    let now = podutil::now();
    let now_s = now.as_second();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1);
    let suspended = spec.suspend == Some(true);
    let pfp = spec.pod_failure_policy.as_ref();

    let succeeded: Vec<&Facts> = facts
        .iter()
        .filter(|f| f.state == State::Succeeded)
        .collect();
    let failed: Vec<Failed<'_>> = claimed
        .iter()
        .zip(&facts)
        .filter(|(_, f)| f.state == State::Failed)
        .map(|(p, f)| Failed {
            facts: f,
            verdict: policy::evaluate(pfp, p),
        })
        .collect();
    let succeeded_indexes: BTreeSet<i32> = succeeded
        .iter()
        .filter_map(|f| f.index)
        .filter(|i| completions.is_some_and(|c| *i < c))
        .collect();
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts: i32 = if on_failure {
        active.iter().map(|(_, f)| f.restarts).sum()
    } else {
        0
    };

    let mut st: JobStatus = old.clone();
    let was_suspended = status::is_true(&st, "Suspended");
    if suspended && !was_suspended {
        status::set_condition(
            &mut st,
            "Suspended",
            true,
            "JobSuspended",
            "Job suspended",
            now,
        );
        ctx.event(job, false, "Suspended", "Job suspended".into());
    } else if !suspended && was_suspended {
        status::set_condition(
            &mut st,
            "Suspended",
            false,
            "JobResumed",
            "Job resumed",
            now,
        );
        // Resumed Jobs start their activeDeadlineSeconds afresh.
        st.start_time = Some(Time(now));
        ctx.event(job, false, "Resumed", "Job resumed".into());
    }
    if !suspended && st.start_time.is_none() {
        st.start_time = Some(Time(now));
    }
    let start = if suspended {
        None
    } else {
        st.start_time.as_ref().map(|t| t.0.as_second())
    };

    let complete = if indexed {
        completions.is_some_and(|c| succeeded_indexes.len() as i32 >= c)
    } else {
        match completions {
            Some(c) => succeeded.len() as i32 >= c,
            None => !succeeded.is_empty() && active.is_empty(),
        }
    };
    let mut requeue: Option<Duration> = None;
    let mut created = 0;
    let mut deleted_pods: Vec<&Pod> = Vec::new();
    let fail = if complete {
        None
    } else {
        failure(spec, &failed, restarts, start, now_s)
    };
    if let Some((reason, msg)) = &fail {
        let victims: Vec<&Pod> = active.iter().map(|(p, _)| *p).collect();
        delete_pods(ctx, job, &pods_api, &victims).await?;
        deleted_pods = victims;
        status::set_condition(&mut st, "FailureTarget", true, reason, msg, now);
        status::set_condition(&mut st, "Failed", true, reason, msg, now);
        ctx.event(job, true, reason, msg.clone());
    } else if complete {
        let victims: Vec<&Pod> = active.iter().map(|(p, _)| *p).collect();
        delete_pods(ctx, job, &pods_api, &victims).await?;
        deleted_pods = victims;
        let msg = "Reached expected number of succeeded pods";
        status::set_condition(
            &mut st,
            "SuccessCriteriaMet",
            true,
            "CompletionsReached",
            msg,
            now,
        );
        status::set_condition(&mut st, "Complete", true, "CompletionsReached", msg, now);
        st.completion_time = Some(Time(now));
        ctx.event(job, false, "Completed", "Job completed".into());
    } else if suspended {
        let victims: Vec<&Pod> = active.iter().map(|(p, _)| *p).collect();
        delete_pods(ctx, job, &pods_api, &victims).await?;
        deleted_pods = victims;
    } else if let Some(pending) = ctx.expectations.pending(&k, Instant::now()) {
        requeue = Some(pending);
    } else {
        let policy_ok = matches!(
            spec.template
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref()),
            Some("Never" | "OnFailure")
        );
        if !policy_ok {
            ctx.event(
                job,
                true,
                "FailedCreate",
                "spec.template.spec.restartPolicy must be Never or OnFailure".into(),
            );
        }
        // The failure back-off counts failures after the last success.
        let last_success = succeeded.iter().filter_map(|f| f.finished_at).max();
        let recent: Vec<i64> = failed
            .iter()
            .filter(|f| f.verdict == Verdict::Count)
            .filter_map(|f| f.facts.finished_at)
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let wait =
            plan::backoff_remaining(recent.len() as u32, recent.iter().copied().max(), now_s);
        let (to_create, victims): (Vec<Option<i32>>, Vec<&Pod>) = if indexed {
            let idx: Vec<Option<i32>> = active.iter().map(|(_, f)| f.index).collect();
            let p = plan::indexed_plan(
                completions.unwrap_or(0),
                parallelism,
                &succeeded_indexes,
                &idx,
            );
            (
                p.create.into_iter().map(Some).collect(),
                p.delete.iter().map(|i| active[*i].0).collect(),
            )
        } else {
            let diff = plan::active_diff(
                completions,
                parallelism,
                succeeded.len() as i32,
                active.len() as i32,
            );
            if diff >= 0 {
                (vec![None; diff as usize], Vec::new())
            } else {
                let pods: Vec<&Pod> = active.iter().map(|(p, _)| *p).collect();
                let v = podutil::victims(&pods, &pods, (-diff) as usize, now);
                (Vec::new(), v)
            }
        };
        delete_pods(ctx, job, &pods_api, &victims).await?;
        deleted_pods = victims;
        if !to_create.is_empty() && policy_ok {
            match wait {
                Some(w) => requeue = Some(w),
                None => created = create_pods(ctx, job, &k, &owner, &pods_api, &to_create).await?,
            }
        }
    }
    if fail.is_none() && !complete {
        if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, start) {
            let left = Duration::from_secs((start + ads - now_s).max(1) as u64);
            requeue = Some(requeue.map_or(left, |r| r.min(left)));
        }
    }

    let still_active: Vec<&(&Pod, &Facts)> = active
        .iter()
        .filter(|(p, _)| !deleted_pods.iter().any(|d| std::ptr::eq(*d, *p)))
        .collect();
    let active_n = still_active.len() as i32 + created;
    let ready_n = still_active.iter().filter(|(_, f)| f.ready).count() as i32;
    let terminating_n = facts
        .iter()
        .filter(|f| f.state == State::Terminating)
        .count() as i32
        + deleted_pods.len() as i32;
    let failed_n = failed
        .iter()
        .filter(|f| f.verdict != Verdict::Ignore)
        .count() as i32;
    let succeeded_n = if indexed {
        succeeded_indexes.len() as i32
    } else {
        succeeded.len() as i32
    };
    st.active = (active_n > 0).then_some(active_n);
    st.ready = Some(ready_n);
    st.terminating = Some(terminating_n);
    st.succeeded = (succeeded_n > 0).then_some(succeeded_n);
    st.failed = (failed_n > 0).then_some(failed_n);
    st.completed_indexes = indexed.then(|| plan::format_indexes(&succeeded_indexes));
    if let Some(p) = status::patch(&old, &st) {
        jobs_api
            .patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await
            .map_err(JobError::Status)?;
    }
    Ok(requeue)
}
