//! One reconcile of an HPA (upstream `reconcileAutoscaler` and `computeReplicasForMetrics`).

use std::sync::Arc;

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::ResourceExt;

use super::behavior::{self, Normalized};
use super::calc::{self, CalcConfig, Tolerances};
use super::metrics::resource_metric;
use super::quantity::parse_milli;
use super::status::{
    container_status, resource_status, set_condition, value_status, Cond, ABLE_TO_SCALE,
    SCALING_ACTIVE, SCALING_LIMITED,
};
use super::{hpa_key, labels, target, Hpa};
use crate::selector::labels_of;

/// Why a reconcile failed (it is retried after the sync period).
#[derive(Debug, thiserror::Error)]
pub enum HpaError {
    /// The target's scale could not be read.
    #[error("failed to query scale subresource for {reference}: {source}")]
    GetScale {
        /// `Kind/namespace/name`.
        reference: String,
        /// Cause.
        source: target::TargetError,
    },
    /// No replica count could be computed from the metrics.
    #[error("failed to compute desired number of replicas based on listed metrics for {reference}: {message}")]
    Metrics {
        /// `Kind/namespace/name`.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// The target's scale could not be written.
    #[error("failed to rescale {reference}: {source}")]
    Rescale {
        /// `Kind/namespace/name`.
        reference: String,
        /// Cause.
        source: target::TargetError,
    },
    /// Writing the HPA's status failed.
    #[error("failed to update status for {key}: {source}")]
    Status {
        /// `namespace/name`.
        key: String,
        /// Cause.
        source: kube::Error,
    },
}

/// One metric's failure: the ScalingActive condition it asks for and its error.
struct MetricFailure {
    cond: Cond,
    error: String,
}

/// What one metric proposes.
struct Proposal {
    replicas: i32,
    metric: String,
    status: MetricStatus,
}

/// The reconcile's working copy.
struct Run<'a> {
    h: &'a Hpa,
    hpa: &'a HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
    now: Timestamp,
}

impl Run<'_> {
    fn cond(&mut self, c: Cond) {
        set_condition(&mut self.status, &c, self.now);
    }

    fn event(&self, warning: bool, reason: &str, note: String) {
        self.h.event(self.hpa, warning, reason, note);
    }

    /// Upstream `getUnableComputeReplicaCountCondition` (records the event too).
    fn unable(&self, reason: &str, err: &str) -> Cond {
        self.event(true, reason, err.to_string());
        Cond::new(
            SCALING_ACTIVE,
            false,
            reason,
            format!("the HPA was unable to compute the replica count: {err}"),
        )
    }
}

/// The metrics of `spec`, with upstream's default (cpu at 80 %) when none are given.
fn metric_specs(hpa: &HorizontalPodAutoscaler) -> Vec<MetricSpec> {
    let given = hpa
        .spec
        .as_ref()
        .and_then(|s| s.metrics.clone())
        .unwrap_or_default();
    if !given.is_empty() {
        return given;
    }
    vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(k8s_openapi::api::autoscaling::v2::ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(80),
                ..Default::default()
            },
        }),
        ..Default::default()
    }]
}

/// Reconciles `shared` once.
pub async fn reconcile_autoscaler(
    shared: &Arc<HorizontalPodAutoscaler>,
    h: &Hpa,
) -> Result<(), HpaError> {
    let hpa: &HorizontalPodAutoscaler = shared;
    let original = hpa.status.clone().unwrap_or_default();
    let mut run = Run {
        h,
        hpa,
        status: original.clone(),
        now: Timestamp::now(),
    };
    let ns = hpa.namespace().unwrap_or_default();
    let key = hpa_key(hpa);
    let spec = hpa.spec.clone().unwrap_or_default();
    let r = &spec.scale_target_ref;
    let reference = format!("{}/{}/{}", r.kind, ns, r.name);
    let client = &h.ctx.client;

    let scale = match h.targets.resource(client, r).await {
        Ok(ar) => target::get_scale(client, &ar, &ns, &r.name)
            .await
            .map(|s| (ar, s)),
        Err(e) => Err(e),
    };
    let (ar, scale) = match scale {
        Ok(v) => v,
        Err(e) => {
            h.targets.forget();
            run.event(true, "FailedGetScale", e.to_string());
            run.cond(Cond::new(
                ABLE_TO_SCALE,
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
            ));
            update_status_if_needed(h, hpa, &original, run.status).await?;
            return Err(HpaError::GetScale {
                reference,
                source: e,
            });
        }
    };
    run.cond(Cond::new(
        ABLE_TO_SCALE,
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    ));
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    {
        let mut hist = h.memory.histories.lock().expect("hpa lock");
        behavior::record_initial(hist.entry(key.clone()).or_default(), current, run.now);
    }
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut desired = 0;
    let mut reason = String::new();
    let mut rescale = true;
    let mut statuses: Vec<MetricStatus> = Vec::new();
    let mut partial_error = None;

    if current == 0 && min != 0 {
        desired = 0;
        rescale = false;
        run.cond(Cond::new(
            SCALING_ACTIVE,
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        match compute_replicas_for_metrics(&mut run, &scale, &metric_specs(hpa)).await {
            Err(message) => {
                run.status.current_replicas = Some(current);
                update_status_if_needed(h, hpa, &original, run.status.clone()).await?;
                run.event(true, "FailedComputeMetricsReplicas", message.clone());
                return Err(HpaError::Metrics { reference, message });
            }
            Ok((proposal, metric, s, err)) => {
                statuses = s;
                partial_error = err;
                let mut rescale_metric = String::new();
                if proposal > desired {
                    desired = proposal;
                    rescale_metric = metric;
                }
                if desired > current {
                    reason = format!("{rescale_metric} above target");
                }
                if desired < current {
                    reason = "All metrics below target".into();
                }
                let n = normalize(h, &run, &key, current, desired, min, max);
                run.cond(Cond::new(ABLE_TO_SCALE, true, n.able.0, n.able.1));
                run.cond(Cond::new(
                    SCALING_LIMITED,
                    n.limited.0,
                    n.limited.1,
                    n.limited.2,
                ));
                desired = n.replicas;
                rescale = desired != current;
            }
        }
    }

    if rescale {
        let mut s: Scale = scale.clone();
        s.spec.get_or_insert_with(Default::default).replicas = Some(desired);
        if let Err(e) = target::put_scale(client, &ar, &ns, &s).await {
            run.event(
                true,
                "FailedRescale",
                format!("New size: {desired}; reason: {reason}; error: {e}"),
            );
            run.cond(Cond::new(
                ABLE_TO_SCALE,
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            ));
            run.status.current_replicas = Some(current);
            update_status_if_needed(h, hpa, &original, run.status).await?;
            return Err(HpaError::Rescale {
                reference,
                source: e,
            });
        }
        run.cond(Cond::new(
            ABLE_TO_SCALE,
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        ));
        run.event(
            false,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {reason}"),
        );
        if let Some(b) = &spec.behavior {
            let (up, down) = behavior::rules(b, down_window(h));
            let mut hist = h.memory.histories.lock().expect("hpa lock");
            behavior::store_scale_event(
                hist.entry(key.clone()).or_default(),
                &up,
                &down,
                current,
                desired,
                run.now,
            );
        }
        tracing::info!(hpa = %key, current, desired, reason = %reason, "rescaled");
    } else {
        desired = current;
    }

    run.status.current_replicas = Some(current);
    run.status.desired_replicas = desired;
    run.status.current_metrics = (!statuses.is_empty()).then_some(statuses);
    if rescale {
        run.status.last_scale_time = Some(Time(run.now));
    }
    update_status_if_needed(h, hpa, &original, run.status).await?;
    match partial_error {
        Some(message) => Err(HpaError::Metrics { reference, message }),
        None => Ok(()),
    }
}

fn down_window(h: &Hpa) -> i32 {
    h.cfg.downscale_stabilization.as_secs() as i32
}

/// Stabilization, policies and min/max, with or without `behavior`.
fn normalize(
    h: &Hpa,
    run: &Run<'_>,
    key: &str,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> Normalized {
    let mut hist = h.memory.histories.lock().expect("hpa lock");
    let hist = hist.entry(key.to_string()).or_default();
    match run.hpa.spec.as_ref().and_then(|s| s.behavior.as_ref()) {
        None => behavior::normalize_legacy(
            hist,
            run.now,
            h.cfg.downscale_stabilization,
            current,
            desired,
            min,
            max,
        ),
        Some(b) => {
            let (up, down) = behavior::rules(b, down_window(h));
            behavior::normalize_with_behaviors(
                hist, run.now, &up, &down, current, desired, min, max,
            )
        }
    }
}

/// The calculator settings for this HPA (per-direction tolerances from `behavior`).
fn calc_config(h: &Hpa, hpa: &HorizontalPodAutoscaler) -> CalcConfig {
    let mut cfg = h.cfg.calc;
    let b = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
    let tol = |r: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>| {
        r.and_then(|r| r.tolerance.as_ref())
            .and_then(|q| super::quantity::parse_f64(&q.0).ok())
    };
    cfg.tolerance = Tolerances {
        scale_down: tol(b.and_then(|b| b.scale_down.as_ref())).unwrap_or(cfg.tolerance.scale_down),
        scale_up: tol(b.and_then(|b| b.scale_up.as_ref())).unwrap_or(cfg.tolerance.scale_up),
    };
    cfg
}

/// Upstream `validateAndParseSelector`: the pods the target selects, or the failure.
fn select_pods(run: &mut Run<'_>, selector: &str) -> Result<Vec<Arc<Pod>>, String> {
    if selector.is_empty() {
        let msg = "selector is required".to_string();
        run.event(true, "SelectorRequired", msg.clone());
        run.cond(Cond::new(
            SCALING_ACTIVE,
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector",
        ));
        return Err(msg);
    }
    let parsed = match labels::parse(selector) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "couldn't convert selector into a corresponding internal selector object: {e}"
            );
            run.event(true, "InvalidSelector", msg.clone());
            run.cond(Cond::new(
                SCALING_ACTIVE,
                false,
                "InvalidSelector",
                msg.clone(),
            ));
            return Err(msg);
        }
    };
    let ns = run.hpa.namespace().unwrap_or_default();
    let key = hpa_key(run.hpa);
    let pods: Vec<Arc<Pod>> = run
        .h
        .ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| parsed.matches(&labels_of(&p.metadata.labels)))
        .collect();
    let mut selecting = vec![key.clone()];
    {
        let mut sels = run.h.memory.selectors.lock().expect("hpa lock");
        sels.insert(key.clone(), parsed);
        let prefix = format!("{ns}/");
        for (other, sel) in sels.iter() {
            if *other != key
                && other.starts_with(&prefix)
                && pods
                    .iter()
                    .any(|p| sel.matches(&labels_of(&p.metadata.labels)))
            {
                selecting.push(other.clone());
            }
        }
    }
    if selecting.len() > 1 {
        selecting.sort();
        let msg = format!(
            "pods by selector {selector} are controlled by multiple HPAs: [{}]",
            selecting.join(" ")
        );
        run.event(true, "AmbiguousSelector", msg.clone());
        run.cond(Cond::new(
            SCALING_ACTIVE,
            false,
            "AmbiguousSelector",
            msg.clone(),
        ));
        return Err(msg);
    }
    Ok(pods)
}

type MetricsOutcome = (i32, String, Vec<MetricStatus>, Option<String>);

/// Upstream `computeReplicasForMetrics`: the highest proposal of the valid metrics.
async fn compute_replicas_for_metrics(
    run: &mut Run<'_>,
    scale: &Scale,
    specs: &[MetricSpec],
) -> Result<MetricsOutcome, String> {
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let pods = select_pods(run, &selector)?;
    let spec_replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let mut replicas = 0;
    let mut metric = String::new();
    let mut statuses = Vec::new();
    let mut invalid = 0usize;
    let mut first: Option<MetricFailure> = None;
    for spec in specs {
        match compute_replicas_for_metric(run, spec, spec_replicas, &selector, &pods).await {
            Ok(p) => {
                if replicas == 0 || p.replicas > replicas {
                    replicas = p.replicas;
                    metric = p.metric;
                }
                statuses.push(p.status);
            }
            Err(f) => {
                if first.is_none() {
                    first = Some(f);
                }
                invalid += 1;
            }
        }
    }
    let err = first.as_ref().map(|f| {
        format!(
            "invalid metrics ({invalid} invalid out of {}), first error is: {}",
            specs.len(),
            f.error
        )
    });
    if let Some(f) = &first {
        if invalid >= specs.len() || replicas < spec_replicas {
            run.cond(f.cond.clone());
            return Err(err.unwrap_or_default());
        }
    }
    run.cond(Cond::new(
        SCALING_ACTIVE,
        true,
        "ValidMetricFound",
        format!("the HPA was able to successfully calculate a replica count from {metric}"),
    ));
    Ok((replicas, metric, statuses, err))
}

/// Upstream `computeReplicasForMetric`, for every metric source type.
async fn compute_replicas_for_metric(
    run: &mut Run<'_>,
    spec: &MetricSpec,
    current: i32,
    selector: &str,
    pods: &[Arc<Pod>],
) -> Result<Proposal, MetricFailure> {
    let fail = |run: &Run<'_>, reason: &str, inner: String, outer: String| MetricFailure {
        cond: run.unable(reason, &inner),
        error: outer,
    };
    let ns = run.hpa.namespace().unwrap_or_default();
    match spec.type_.as_str() {
        "Resource" | "ContainerResource" => {
            let (name, container, target, reason) = match (&spec.resource, &spec.container_resource)
            {
                (Some(r), _) if spec.type_ == "Resource" => (
                    r.name.clone(),
                    None,
                    r.target.clone(),
                    "FailedGetResourceMetric",
                ),
                (_, Some(c)) if spec.type_ == "ContainerResource" => (
                    c.name.clone(),
                    Some(c.container.clone()),
                    c.target.clone(),
                    "FailedGetContainerResourceMetric",
                ),
                _ => {
                    let e = format!(
                        "invalid {} metric source: the source is not set",
                        spec.type_
                    );
                    return Err(fail(run, "InvalidMetricSourceType", e.clone(), e));
                }
            };
            let outcome = resource_generic(
                run,
                current,
                &target,
                &name,
                container.as_deref(),
                selector,
                pods,
            )
            .await;
            match outcome {
                Ok((replicas, value, metric)) => Ok(Proposal {
                    replicas,
                    metric,
                    status: match &container {
                        Some(c) => container_status(&name, c, value),
                        None => resource_status(&name, value),
                    },
                }),
                Err(e) => {
                    let outer = match &container {
                        Some(c) => format!("failed to get {c} container metric value: {e}"),
                        None => format!("failed to get {name} resource metric value: {e}"),
                    };
                    Err(fail(run, reason, e, outer))
                }
            }
        }
        "Pods" => {
            let name = spec
                .pods
                .as_ref()
                .map(|p| p.metric.name.clone())
                .unwrap_or_default();
            let e = format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: the custom metrics API (custom.metrics.k8s.io) is not served");
            Err(fail(
                run,
                "FailedGetPodsMetric",
                e.clone(),
                format!("failed to get pods metric value: {e}"),
            ))
        }
        "Object" => {
            let name = spec
                .object
                .as_ref()
                .map(|o| o.metric.name.clone())
                .unwrap_or_default();
            let e = format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: the custom metrics API (custom.metrics.k8s.io) is not served");
            Err(fail(
                run,
                "FailedGetObjectMetric",
                e.clone(),
                format!("failed to get object metric value: {e}"),
            ))
        }
        "External" => {
            let name = spec
                .external
                .as_ref()
                .map(|x| x.metric.name.clone())
                .unwrap_or_default();
            let e = format!("unable to get external metric {ns}/{name}: the external metrics API (external.metrics.k8s.io) is not served");
            Err(fail(
                run,
                "FailedGetExternalMetric",
                e.clone(),
                format!("failed to get {name} external metric value: {e}"),
            ))
        }
        other => {
            let e = format!("unknown metric source type {other:?}");
            Err(fail(run, "InvalidMetricSourceType", e.clone(), e))
        }
    }
}

/// Upstream `computeStatusForResourceMetricGeneric`: (replicas, value status, metric name).
async fn resource_generic(
    run: &Run<'_>,
    current: i32,
    target: &MetricTarget,
    resource: &str,
    container: Option<&str>,
    selector: &str,
    pods: &[Arc<Pod>],
) -> Result<
    (
        i32,
        k8s_openapi::api::autoscaling::v2::MetricValueStatus,
        String,
    ),
    String,
> {
    let ns = run.hpa.namespace().unwrap_or_default();
    let cfg = calc_config(run.h, run.hpa);
    let refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    let fetch = || async {
        let items = run
            .h
            .metrics
            .pod_metrics(&ns, selector)
            .await
            .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"))?;
        resource_metric(&items, resource, container)
            .map(|(m, _)| m)
            .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"))
    };
    if let Some(q) = &target.average_value {
        let wrap = |e: String| format!("failed to get {resource} usage: {e}");
        let target_milli = parse_milli(&q.0).map_err(|e| wrap(e.to_string()))?;
        let metrics = fetch().await.map_err(wrap)?;
        let (replicas, usage) = calc::raw_resource_replicas(
            current,
            target_milli,
            resource,
            &refs,
            metrics,
            &cfg,
            run.now,
        )
        .map_err(|e| wrap(e.to_string()))?;
        return Ok((
            replicas,
            value_status(None, usage),
            format!("{resource} resource"),
        ));
    }
    let Some(util) = target.average_utilization else {
        return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
    };
    let wrap = |e: String| format!("failed to get {resource} utilization: {e}");
    let metrics = fetch().await.map_err(wrap)?;
    let u = calc::resource_replicas(
        current, util, resource, container, &refs, metrics, &cfg, run.now,
    )
    .map_err(|e| wrap(e.to_string()))?;
    let name = if container.is_some() {
        format!("{resource} container resource utilization (percentage of request)")
    } else {
        format!("{resource} resource utilization (percentage of request)")
    };
    Ok((u.replicas, value_status(Some(u.utilization), u.raw), name))
}

/// Writes `status` unless it equals `original` (upstream `updateStatusIfNeeded`).
async fn update_status_if_needed(
    h: &Hpa,
    hpa: &HorizontalPodAutoscaler,
    original: &HorizontalPodAutoscalerStatus,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), HpaError> {
    if *original == status {
        return Ok(());
    }
    let mut obj = hpa.clone();
    obj.status = Some(status);
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(h.ctx.client.clone(), &hpa.namespace().unwrap_or_default());
    api.replace_status(&hpa.name_any(), &PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|source| HpaError::Status {
            key: hpa_key(hpa),
            source,
        })
}
