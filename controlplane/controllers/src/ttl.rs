//! The TTL-after-finished controller (upstream `ttlafterfinished`): a Job with
//! `ttlSecondsAfterFinished` is deleted, with background propagation (its pods go with it),
//! once it has been Complete or Failed for that long.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::ctx::{drain, error_policy, key, Ctx};
use crate::job::status;
use crate::podutil;

/// Errors of one TTL check.
#[derive(Debug, thiserror::Error)]
pub enum TtlError {
    /// Deleting the Job failed.
    #[error("delete job: {0}")]
    Delete(kube::Error),
}

/// Seconds left before a Job that finished at `finished` (epoch seconds) with `ttl` expires at
/// `now`; 0 means delete now.
pub fn time_left(finished: i64, ttl: i32, now: i64) -> u64 {
    (finished + i64::from(ttl) - now).max(0) as u64
}

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let jobs = ctx.jobs.clone();
    let ctrl = Controller::for_stream(jobs.applied(), jobs.store());
    async move {
        ctx.ready().await;
        tracing::info!("ttl-after-finished controller started");
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Deletes `job` if its TTL after finishing has passed, else looks again when it will have.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, TtlError> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(finished) = job.status.as_ref().and_then(status::finished_at) else {
        return Ok(Action::await_change());
    };
    if !job.status.as_ref().is_some_and(status::is_finished) {
        return Ok(Action::await_change());
    }
    let left = time_left(finished.as_second(), ttl, podutil::now().as_second());
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left)));
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => {
            tracing::info!(job = %key(&*job), "deleted after ttlSecondsAfterFinished");
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(TtlError::Delete(e)),
    }
    ctx.limiter.forget(&key(&*job));
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_table() {
        assert_eq!(time_left(100, 0, 100), 0);
        assert_eq!(time_left(100, 30, 110), 20);
        assert_eq!(time_left(100, 30, 130), 0);
        assert_eq!(time_left(100, 30, 500), 0);
    }
}
