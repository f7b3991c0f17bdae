//! What every controller shares: the API client, one informer per resource type, expectations,
//! the per-key failure rate limiter and the event recorder; plus the common error policy.

use std::fmt::Display;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, Pod, ReplicationController, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use crate::daemonset::backoff::FailedPodsBackoff;
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::ratelimit::RateLimiter;

/// Shared state of the controller manager.
pub struct Ctx {
    /// API client.
    pub client: kube::Client,
    /// All pods.
    pub pods: Informer<Pod>,
    /// All ReplicaSets.
    pub replica_sets: Informer<ReplicaSet>,
    /// All ReplicationControllers.
    pub replication_controllers: Informer<ReplicationController>,
    /// All Deployments.
    pub deployments: Informer<Deployment>,
    /// All StatefulSets.
    pub stateful_sets: Informer<StatefulSet>,
    /// All ControllerRevisions.
    pub controller_revisions: Informer<ControllerRevision>,
    /// All Namespaces.
    pub namespaces: Informer<Namespace>,
    /// All ServiceAccounts.
    pub service_accounts: Informer<ServiceAccount>,
    /// All Services.
    pub services: Informer<Service>,
    /// All EndpointSlices.
    pub endpoint_slices: Informer<EndpointSlice>,
    /// All Endpoints.
    pub endpoints: Informer<Endpoints>,
    /// All Jobs.
    pub jobs: Informer<Job>,
    /// All CronJobs.
    pub cron_jobs: Informer<CronJob>,
    /// All DaemonSets.
    pub daemon_sets: Informer<DaemonSet>,
    /// All Nodes.
    pub nodes: Informer<Node>,
    /// The DaemonSet controller's failed-pod back-off per set and node.
    pub daemon_backoff: FailedPodsBackoff,
    /// Outstanding pod creations/deletions per controller key.
    pub expectations: Expectations,
    /// Failure backoff per controller key.
    pub limiter: RateLimiter,
    /// Events (`kubectl describe`).
    pub recorder: Recorder,
}

impl Ctx {
    /// Informers with empty caches (filled once [`Ctx::run_informers`] runs).
    pub fn new(client: kube::Client) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "kube-controller-manager".into(),
                instance: None,
            },
        );
        Self {
            client,
            pods: Informer::new(),
            replica_sets: Informer::new(),
            replication_controllers: Informer::new(),
            deployments: Informer::new(),
            stateful_sets: Informer::new(),
            controller_revisions: Informer::new(),
            namespaces: Informer::new(),
            service_accounts: Informer::new(),
            services: Informer::new(),
            endpoint_slices: Informer::new(),
            endpoints: Informer::new(),
            jobs: Informer::new(),
            cron_jobs: Informer::new(),
            daemon_sets: Informer::new(),
            nodes: Informer::new(),
            daemon_backoff: FailedPodsBackoff::default(),
            expectations: Expectations::default(),
            limiter: RateLimiter::default(),
            recorder,
        }
    }

    /// Runs every informer's watch (forever).
    pub async fn run_informers(&self) {
        let c = &self.client;
        tokio::join!(
            self.pods.clone().run(Api::all(c.clone())),
            self.replica_sets.clone().run(Api::all(c.clone())),
            self.replication_controllers
                .clone()
                .run(Api::all(c.clone())),
            self.deployments.clone().run(Api::all(c.clone())),
            self.stateful_sets.clone().run(Api::all(c.clone())),
            self.controller_revisions.clone().run(Api::all(c.clone())),
            self.namespaces.clone().run(Api::all(c.clone())),
            self.service_accounts.clone().run(Api::all(c.clone())),
            self.services.clone().run(Api::all(c.clone())),
            self.endpoint_slices.clone().run(Api::all(c.clone())),
            self.endpoints.clone().run(Api::all(c.clone())),
            self.jobs.clone().run(Api::all(c.clone())),
            self.cron_jobs.clone().run(Api::all(c.clone())),
            self.daemon_sets.clone().run(Api::all(c.clone())),
            self.nodes.clone().run(Api::all(c.clone())),
        );
    }

    /// Waits until every informer has listed once.
    pub async fn ready(&self) {
        tokio::join!(
            self.pods.ready(),
            self.replica_sets.ready(),
            self.replication_controllers.ready(),
            self.deployments.ready(),
            self.stateful_sets.ready(),
            self.controller_revisions.ready(),
            self.namespaces.ready(),
            self.service_accounts.ready(),
            self.services.ready(),
            self.endpoint_slices.ready(),
            self.endpoints.ready(),
            self.jobs.ready(),
            self.cron_jobs.ready(),
            self.daemon_sets.ready(),
            self.nodes.ready(),
        );
    }

    /// Records an event about `obj` in the background (best effort, as upstream's recorder).
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let reference = obj.object_ref(&());
        let recorder = self.recorder.clone();
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            action: note.chars().take(128).collect(),
            note: Some(note),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!("event: {e}");
            }
        });
    }
}

/// The queue key of an object: `Kind/namespace/name`.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The error policy of every controller: retry the key after its exponential backoff.
pub fn error_policy<K, E>(obj: Arc<K>, err: &E, ctx: Arc<Ctx>) -> Action
where
    K: Resource<DynamicType = ()>,
    E: Display,
{
    let k = key(&*obj);
    let delay = ctx.limiter.when(&k);
    tracing::warn!(key = %k, retry_in = ?delay, "reconcile failed: {err}");
    Action::requeue(delay)
}

/// Drives a controller's output stream, logging nothing for successes (errors are logged by
/// the error policy).
pub async fn drain<S, T, E>(stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: Display,
{
    use futures::StreamExt;
    futures::pin_mut!(stream);
    while let Some(r) = stream.next().await {
        if let Err(e) = r {
            tracing::debug!("controller: {e}");
        }
    }
}
