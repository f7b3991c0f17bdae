//! The replica calculator (upstream `replica_calculator.go`): usage ratio against the target,
//! tolerance, pods missing metrics and (for cpu) unready or initializing pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::metrics::{PodMetric, PodMetricsInfo};
use super::quantity::parse_milli;

/// How far the usage ratio may stray from 1.0 before replicas change, per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Below 1.0 (scale-down side).
    pub scale_down: f64,
    /// Above 1.0 (scale-up side).
    pub scale_up: f64,
}

impl Tolerances {
    /// The same tolerance both ways (upstream `--horizontal-pod-autoscaler-tolerance`).
    pub fn both(t: f64) -> Self {
        Self {
            scale_down: t,
            scale_up: t,
        }
    }

    /// Whether `ratio` is close enough to 1.0 to leave replicas alone.
    pub fn within(&self, ratio: f64) -> bool {
        (1.0 - ratio) <= self.scale_down && (ratio - 1.0) <= self.scale_up
    }
}

/// Calculator settings (upstream's controller-manager flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalcConfig {
    /// Tolerance around the target.
    pub tolerance: Tolerances,
    /// `--horizontal-pod-autoscaler-cpu-initialization-period` (5 min).
    pub cpu_initialization_period: SignedDuration,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay` (30 s).
    pub initial_readiness_delay: SignedDuration,
}

impl Default for CalcConfig {
    fn default() -> Self {
        Self {
            tolerance: Tolerances::both(0.1),
            cpu_initialization_period: SignedDuration::from_secs(300),
            initial_readiness_delay: SignedDuration::from_secs(30),
        }
    }
}

/// Why no replica count could be computed (messages as upstream's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// The selector matches no pods.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// Every pod was unready, ignored or without metrics.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoReadyMetrics,
    /// A container has no request for the resource.
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        /// Resource name.
        resource: String,
        /// Container name.
        container: String,
        /// Pod name.
        pod: String,
    },
    /// The metrics and the pods have nothing in common.
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

/// Pods sorted the way upstream's `groupPods` does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Groups {
    /// Pods counted as ready with metrics.
    pub ready: usize,
    /// Pending pods, and (cpu) unready or still-initializing ones.
    pub unready: BTreeSet<String>,
    /// Pods without a metric.
    pub missing: BTreeSet<String>,
    /// Deleted or failed pods.
    pub ignored: BTreeSet<String>,
}

fn ready_condition(pod: &Pod) -> Option<(&str, Option<Timestamp>)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        c.status.as_str(),
        c.last_transition_time.as_ref().map(|t| t.0),
    ))
}

/// Upstream `groupPods`.
pub fn group_pods(
    pods: &[&Pod],
    metrics: &PodMetricsInfo,
    resource: &str,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Groups {
    let mut g = Groups::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some() || phase == Some("Failed") {
            g.ignored.insert(name);
            continue;
        }
        if phase == Some("Pending") {
            g.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let start = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let unready = match (ready_condition(pod), start) {
                (Some((status, transition)), Some(start)) => {
                    let transition = transition.unwrap_or(Timestamp::UNIX_EPOCH);
                    if start + cfg.cpu_initialization_period > now {
                        // Within the initialization period: ignore the sample if the pod is
                        // unready or no full metric window passed since its last transition.
                        status == "False" || metric.timestamp < transition + metric.window
                    } else {
                        // Ignore it if the pod is unready and has never been ready.
                        status == "False" && start + cfg.initial_readiness_delay > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(name);
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// Upstream `calculatePodRequests`: the sum of the (matching) containers' requests per pod.
pub fn pod_requests(
    pods: &[&Pod],
    container: Option<&str>,
    resource: &str,
) -> Result<BTreeMap<String, i64>, CalcError> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut sum = 0i64;
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            if container.is_some_and(|want| want != c.name) {
                continue;
            }
            let req = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| parse_milli(&q.0).ok());
            match req {
                Some(v) => sum += v,
                None => {
                    return Err(CalcError::MissingRequest {
                        resource: resource.into(),
                        container: c.name.clone(),
                        pod: name,
                    })
                }
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// Upstream `GetResourceUtilizationRatio`: (ratio, utilization %, average raw value).
pub fn utilization_ratio(
    metrics: &PodMetricsInfo,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), CalcError> {
    let (mut total, mut req_total, mut n) = (0i64, 0i64, 0i64);
    for (pod, m) in metrics {
        let Some(r) = requests.get(pod) else {
            continue;
        };
        total += m.value;
        req_total += r;
        n += 1;
    }
    if req_total == 0 {
        return Err(CalcError::NoMatchingMetrics);
    }
    let util = ((total * 100) / req_total) as i32;
    Ok((util as f64 / target as f64, util, total / n))
}

/// Upstream `GetMetricUsageRatio`: (ratio, average usage).
pub fn usage_ratio(metrics: &PodMetricsInfo, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let avg = total / metrics.len().max(1) as i64;
    (avg as f64 / target as f64, avg)
}

/// What a utilization calculation yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utilization {
    /// Proposed replicas.
    pub replicas: i32,
    /// Current average utilization (% of request).
    pub utilization: i32,
    /// Current average usage (milli-units).
    pub raw: i64,
}

fn zero(now: Timestamp) -> PodMetric {
    PodMetric {
        value: 0,
        timestamp: now,
        window: SignedDuration::ZERO,
    }
}

/// Upstream `GetResourceReplicas` (target `Utilization`), given the pods and their metrics.
#[allow(clippy::too_many_arguments)]
pub fn resource_replicas(
    current: i32,
    target_utilization: i32,
    resource: &str,
    container: Option<&str>,
    pods: &[&Pod],
    mut metrics: PodMetricsInfo,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Result<Utilization, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group_pods(pods, &metrics, resource, cfg, now);
    for p in g.ignored.iter().chain(&g.unready) {
        metrics.remove(p);
    }
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let requests = pod_requests(pods, container, resource)?;
    let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target_utilization)?;
    let done = |replicas| Utilization {
        replicas,
        utilization,
        raw,
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if cfg.tolerance.within(ratio) {
            return Ok(done(current));
        }
        return Ok(done((ratio * g.ready as f64).ceil() as i32));
    }
    if !g.missing.is_empty() {
        if ratio < 1.0 {
            // Scale-down: missing pods use 100% of their request (or the target if above).
            let fallback = i64::from(target_utilization.max(100));
            for p in &g.missing {
                let v = requests.get(p).copied().unwrap_or(0) * fallback / 100;
                metrics.insert(
                    p.clone(),
                    PodMetric {
                        value: v,
                        ..zero(now)
                    },
                );
            }
        } else if ratio > 1.0 {
            for p in &g.missing {
                metrics.insert(p.clone(), zero(now));
            }
        }
    }
    if scale_up_with_unready {
        for p in &g.unready {
            metrics.insert(p.clone(), zero(now));
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target_utilization)?;
    if cfg.tolerance.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(done(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(done(current));
    }
    Ok(done(replicas))
}

/// Upstream `GetRawResourceReplicas`/`calcPlainMetricReplicas` (target `AverageValue`):
/// (replicas, average usage in milli-units).
pub fn raw_resource_replicas(
    current: i32,
    target_usage: i64,
    resource: &str,
    pods: &[&Pod],
    mut metrics: PodMetricsInfo,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Result<(i32, i64), CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group_pods(pods, &metrics, resource, cfg, now);
    for p in g.ignored.iter().chain(&g.unready) {
        metrics.remove(p);
    }
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let (ratio, usage) = usage_ratio(&metrics, target_usage);
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if cfg.tolerance.within(ratio) {
            return Ok((current, usage));
        }
        return Ok(((ratio * g.ready as f64).ceil() as i32, usage));
    }
    if !g.missing.is_empty() {
        if ratio < 1.0 {
            for p in &g.missing {
                let m = PodMetric {
                    value: target_usage,
                    ..zero(now)
                };
                metrics.insert(p.clone(), m);
            }
        } else if ratio > 1.0 {
            for p in &g.missing {
                metrics.insert(p.clone(), zero(now));
            }
        }
    }
    if scale_up_with_unready {
        for p in &g.unready {
            metrics.insert(p.clone(), zero(now));
        }
    }
    let (new_ratio, _) = usage_ratio(&metrics, target_usage);
    if cfg.tolerance.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, usage));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, usage));
    }
    Ok((replicas, usage))
}

#[cfg(test)]
#[path = "calc_tests.rs"]
mod tests;
