//! The Job controller (upstream `pkg/controller/job`): runs pods from `spec.template` until
//! `completions` succeed (NonIndexed, or Indexed with one pod per completion index), at most
//! `parallelism` at a time, re-creating failed pods after an exponential back-off until
//! `backoffLimit`; honours `activeDeadlineSeconds`, `suspend` and `podFailurePolicy`, and
//! reports counts and conditions through the status subresource.

pub mod plan;
pub mod pods;
pub mod policy;
pub mod status;
pub mod sync;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::claim::{controller_of, ClaimError};
use crate::ctx::{drain, error_policy, key, Ctx};
use crate::informer::Change;

/// Errors of one Job sync.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Adoption or release failed.
    #[error("claim pods: {0}")]
    Claim(#[from] ClaimError),
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

/// The expectations key of the Job controlling `pod`, if any.
fn owner_key(pod: &Pod) -> Option<String> {
    let r = controller_of(pod)?;
    (r.kind == "Job" && r.api_version == "batch/v1").then(|| {
        format!(
            "Job/{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

/// Feeds creation expectations from pod changes (before any controller sees them).
fn observe(ctx: &Ctx, change: &Change<Pod>) {
    if let Change::Added(p) = change {
        if let Some(k) = owner_key(p) {
            ctx.expectations.creation_observed(&k);
        }
    }
}

/// Runs the controller (forever); build it before the informers start.
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    {
        let c = ctx.clone();
        ctx.pods.on_change(move |ch| observe(&c, ch));
        let c = ctx.clone();
        ctx.jobs.on_change(move |ch| {
            if let Change::Deleted(o) = ch {
                c.expectations.forget(&key(&**o));
            }
        });
    }
    let jobs = ctx.jobs.clone();
    let for_orphans = jobs.clone();
    let ctrl = Controller::for_stream(jobs.applied(), jobs.store())
        .owns_stream(ctx.pods.touched())
        .watches_stream(ctx.pods.touched(), move |pod: Pod| {
            // An orphan labelled with a Job's name wakes that Job (adoption).
            if controller_of(&pod).is_some() {
                return None;
            }
            let name = pod.labels().get(pods::JOB_NAME)?;
            for_orphans
                .get(&pod.namespace().unwrap_or_default(), name)
                .map(|j| ObjectRef::from_obj(&*j))
        });
    async move {
        ctx.ready().await;
        tracing::info!("job controller started");
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

/// Reconciles one Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, JobError> {
    let k = key(&*job);
    let requeue = sync::sync(&job, &ctx).await?;
    ctx.limiter.forget(&k);
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
