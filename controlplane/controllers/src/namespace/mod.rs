//! The namespace controller (upstream's `pkg/controller/namespace/deletion`): a Terminating
//! namespace whose `spec.finalizers` still holds `kubernetes` has every namespaced resource
//! deleted (deletecollection where served, else one by one, in the background), its deletion
//! [`conditions`] kept current, and is looked at again while content remains (after half the
//! longest grace period of its pods, as upstream estimates); once empty, `kubernetes` is removed
//! through `PUT /api/v1/namespaces/{name}/finalize` and the API server lets it go.

pub mod conditions;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::Action;
use kube::runtime::Controller;
use kube::ResourceExt;

use crate::ctx::{drain, error_policy, Ctx};
use conditions::Report;

/// The namespace controller's finalizer.
pub const FINALIZER: &str = "kubernetes";
/// How long content with finalizers is given before the next look (upstream's estimate).
const FINALIZER_ESTIMATE: i64 = 15;

/// Errors of one namespace pass.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Some content could not be deleted (or is unexpectedly still there).
    #[error("{0}")]
    Content(String),
}

/// Runs the controller (forever); build it before the informers start.
pub fn run(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let nss = ctx.namespaces.clone();
    let ctrl = Controller::for_stream(nss.applied(), nss.store());
    async move {
        ctx.ready().await;
        tracing::info!("namespace controller started");
        drain(ctrl.run(reconcile, error_policy, ctx).boxed()).await;
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Every namespaced resource that can be deleted (preferred versions), with whether it serves
/// deletecollection.
async fn deletable(client: &kube::Client) -> Result<Vec<(ApiResource, bool)>, kube::Error> {
    let d = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for g in d.groups() {
        for (ar, caps) in g.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::DELETE) {
                continue;
            }
            out.push((ar, caps.supports_operation(verbs::DELETE_COLLECTION)));
        }
    }
    Ok(out)
}

/// Seconds the pods of `ns` may still need (their longest grace period, if the namespace's
/// deletion began less than that long ago).
async fn pod_estimate(ctx: &Ctx, ns: &str, deleted_at: i64) -> Result<i64, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut estimate = 0;
    for p in pods.list(&ListParams::default()).await?.items {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let grace = p
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(0);
        estimate = estimate.max(grace);
    }
    let elapsed = k8s_openapi::jiff::Timestamp::now().as_second() - deleted_at;
    Ok(if elapsed >= estimate { 0 } else { estimate })
}

/// Deletes everything of `ar` in `ns`; what is left (count, per finalizer) and the estimate.
async fn delete_resource(
    ctx: &Ctx,
    ns: &str,
    ar: &ApiResource,
    collection: bool,
    deleted_at: i64,
    report: &mut Report,
) -> Result<i64, NamespaceError> {
    let mut estimate = if ar.group.is_empty() && ar.plural == "pods" {
        pod_estimate(ctx, ns, deleted_at).await?
    } else {
        0
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
    let dp = DeleteParams::background();
    if collection {
        api.delete_collection(&dp, &ListParams::default()).await?;
    } else {
        for o in api.list(&ListParams::default()).await?.items {
            match api.delete(&o.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let left = api.list(&ListParams::default()).await?.items;
    if left.is_empty() {
        return Ok(estimate);
    }
    report
        .remaining
        .insert(format!("{}.{}", ar.plural, ar.group), left.len());
    if estimate == 0 {
        let mut any = false;
        for o in &left {
            for f in o.finalizers() {
                *report.finalizers.entry(f.clone()).or_default() += 1;
                any = true;
            }
        }
        if !any {
            return Err(NamespaceError::Content(format!(
                "unexpected items still remain in namespace: {ns} for gvr: {{{} {} {}}}",
                ar.group, ar.version, ar.plural
            )));
        }
        estimate = FINALIZER_ESTIMATE;
    }
    Ok(estimate)
}

/// Deletes the content of a Terminating namespace, then finalizes it.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, NamespaceError> {
    let Some(deleted_at) = ns.metadata.deletion_timestamp.as_ref() else {
        return Ok(Action::await_change());
    };
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    let Some(mut live) = nss.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let mut report = Report::default();
    let mut estimate = 0;
    match deletable(&ctx.client).await {
        Err(e) => report.discovery = Some(e.to_string()),
        Ok(resources) => {
            for (ar, collection) in resources {
                match delete_resource(
                    &ctx,
                    &name,
                    &ar,
                    collection,
                    deleted_at.0.as_second(),
                    &mut report,
                )
                .await
                {
                    Ok(e) => estimate = estimate.max(e),
                    Err(e) => report.content_errors.push(e.to_string()),
                }
            }
        }
    }
    let status = live.status.get_or_insert_with(Default::default);
    status.phase = Some("Terminating".into());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if report.apply(conditions, now()) {
        match nss
            .replace_status(&name, &PostParams::default(), &live)
            .await
        {
            Ok(n) => live = n,
            Err(e) => tracing::warn!(namespace = %name, "updating deletion conditions: {e}"),
        }
    }
    if let Some(d) = report.discovery {
        return Err(NamespaceError::Content(d));
    }
    if !report.content_errors.is_empty() {
        return Err(NamespaceError::Content(conditions::aggregate(
            &report.content_errors,
        )));
    }
    if estimate > 0 {
        return Ok(Action::requeue(Duration::from_secs(
            (estimate / 2 + 1) as u64,
        )));
    }
    if let Some(spec) = live.spec.as_mut() {
        if let Some(f) = spec.finalizers.as_mut() {
            f.retain(|f| f != FINALIZER);
        }
    }
    match nss
        .replace_subresource("finalize", &name, &PostParams::default(), &live)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = %name, "namespace finalized");
    ctx.limiter.forget(&crate::ctx::key(&*ns));
    Ok(Action::await_change())
}
