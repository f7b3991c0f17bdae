//! The CronJob controller (upstream `cronjob_controllerv2`): creates a Job
//! `<cronjob>-<minutes since the epoch>` from `spec.jobTemplate` at each schedule time (5-field
//! cron or a macro, in `spec.timeZone` or a `TZ=` prefix), honouring `suspend`,
//! `startingDeadlineSeconds` and `concurrencyPolicy`, keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, prunes finished Jobs to the history limits and
//! wakes up exactly at the next schedule time. The clock is injectable for tests.

pub mod plan;
pub mod schedule;
pub mod sync;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::CronJob;
use kube::runtime::controller::Action;
use kube::runtime::Controller;

use crate::ctx::{drain, error_policy, key, Ctx};

/// Errors of one CronJob sync.
#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// Writing status failed.
    #[error("update status: {0}")]
    Status(kube::Error),
}

/// The controller's notion of now.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The controller's state: the shared context and its clock.
pub struct CronCtx {
    /// Shared controller-manager state.
    pub ctx: Arc<Ctx>,
    /// Now.
    pub clock: Clock,
}

/// Runs the controller on the system clock (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    controller_with_clock(ctx, Arc::new(Utc::now))
}

/// Runs the controller with `clock` as now (forever); build it before the informers start.
pub fn controller_with_clock(
    ctx: Arc<Ctx>,
    clock: Clock,
) -> impl std::future::Future<Output = ()> + Send {
    let cjs = ctx.cron_jobs.clone();
    let ctrl = Controller::for_stream(cjs.applied(), cjs.store()).owns_stream(ctx.jobs.touched());
    async move {
        ctx.ready().await;
        tracing::info!("cronjob controller started");
        let state = Arc::new(CronCtx { ctx, clock });
        drain(ctrl.run(reconcile, cron_error_policy, state).boxed()).await;
    }
}

fn cron_error_policy(cj: Arc<CronJob>, err: &CronJobError, c: Arc<CronCtx>) -> Action {
    error_policy(cj, err, c.ctx.clone())
}

/// Reconciles one CronJob.
pub async fn reconcile(cj: Arc<CronJob>, c: Arc<CronCtx>) -> Result<Action, CronJobError> {
    let now = (c.clock)();
    let requeue = sync::sync(&cj, &c.ctx, now).await?;
    c.ctx.limiter.forget(&key(&*cj));
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
