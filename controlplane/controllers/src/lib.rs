//! kennel's controller manager: level-triggered kube-runtime controllers (ReplicaSet,
//! ReplicationController, Deployment, StatefulSet, DaemonSet, Endpoints/EndpointSlice,
//! ServiceAccount, ClusterRole aggregation, HorizontalPodAutoscaler, root-CA publisher, Job, CronJob,
//! TTL-after-finished) over shared informers (one watch per
//! resource type), with client-go's expectations and per-key failure backoff, behind leader
//! election on the `kube-system/kube-controller-manager` Lease.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod claim;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod ctx;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod expectations;
pub mod garbagecollector;
pub mod hpa;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod podutil;
pub mod ratelimit;
pub mod replicaset;
pub mod rootca;
pub mod selector;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttl;
pub mod volume;

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;

pub use ctx::Ctx;
pub use kennel_lease::{LeaderError, LeaseConfig};

/// Controller manager configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Our identity as a lease holder (e.g. the host name plus a unique suffix).
    pub identity: String,
    /// Take the `kube-system/kube-controller-manager` Lease before running controllers.
    pub leader_elect: bool,
    /// The cluster CA (PEM) the root-CA publisher puts in every namespace's
    /// `kube-root-ca.crt`; `None` runs no publisher (upstream: `--root-ca-file` unset).
    pub root_ca_pem: Option<String>,
}

/// Why the controller manager stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Leadership was lost (the caller restarts, as kube-controller-manager exits).
    #[error("leader election: {0}")]
    Leader(#[from] LeaderError),
    /// A controller or informer ended.
    #[error("{0} ended")]
    Ended(&'static str),
}

/// Every controller and informer, as one future.
fn controllers(
    client: kube::Client,
    root_ca_pem: Option<String>,
) -> BoxFuture<'static, ControllerError> {
    let ctx = Arc::new(Ctx::new(client.clone()));
    // Controllers register their handlers and subscriptions now, before any watch runs.
    let mut parts: Vec<(&'static str, BoxFuture<'static, ()>)> = vec![
        (
            "replicaset controller",
            replicaset::controller::<ReplicaSet>(ctx.clone()).boxed(),
        ),
        (
            "replicationcontroller controller",
            replicaset::controller::<ReplicationController>(ctx.clone()).boxed(),
        ),
        (
            "deployment controller",
            deployment::controller(ctx.clone()).boxed(),
        ),
        (
            "statefulset controller",
            statefulset::controller(ctx.clone()).boxed(),
        ),
        (
            "daemonset controller",
            daemonset::controller(ctx.clone()).boxed(),
        ),
        (
            "endpoints controller",
            endpoints::controller(ctx.clone()).boxed(),
        ),
        (
            "endpointslice mirroring controller",
            endpoints::mirror::controller(ctx.clone()).boxed(),
        ),
        (
            "serviceaccount controller",
            serviceaccount::controller(ctx.clone()).boxed(),
        ),
        (
            "clusterrole aggregation controller",
            clusterrole_aggregation::controller(ctx.clone()).boxed(),
        ),
        (
            "horizontal pod autoscaler controller",
            hpa::controller(ctx.clone()).boxed(),
        ),
        ("job controller", job::controller(ctx.clone()).boxed()),
        (
            "cronjob controller",
            cronjob::controller(ctx.clone()).boxed(),
        ),
        (
            "ttl-after-finished controller",
            ttl::controller(ctx.clone()).boxed(),
        ),
        (
            "garbage collector controller",
            garbagecollector::run(ctx.clone()).boxed(),
        ),
        ("namespace controller", namespace::run(ctx.clone()).boxed()),
        (
            "persistentvolume controllers",
            volume::run(ctx.clone()).boxed(),
        ),
    ];
    if let Some(pem) = root_ca_pem {
        parts.push(("root-ca-cert-publisher", rootca::run(client, pem).boxed()));
    }
    async move {
        let informers = {
            let ctx = ctx.clone();
            async move { ctx.run_informers().await }.boxed()
        };
        let mut all: Vec<BoxFuture<'static, &'static str>> = parts
            .into_iter()
            .map(|(name, f)| f.map(move |()| name).boxed())
            .collect();
        all.push(informers.map(|()| "informers").boxed());
        let (name, _, _) = futures::future::select_all(all).await;
        ControllerError::Ended(name)
    }
    .boxed()
}

/// Runs every controller until the future is dropped (or leadership is lost, or a part ends).
pub async fn run(cfg: ControllerConfig, client: kube::Client) -> Result<(), ControllerError> {
    if !cfg.leader_elect {
        return Err(controllers(client, cfg.root_ca_pem).await);
    }
    let mut elector = kennel_lease::Elector::new(
        client.clone(),
        LeaseConfig::new("kube-controller-manager", &cfg.identity),
    );
    elector.acquire().await;
    tokio::select! {
        e = controllers(client, cfg.root_ca_pem.clone()) => Err(e),
        lost = elector.hold() => Err(ControllerError::Leader(lost)),
    }
}
