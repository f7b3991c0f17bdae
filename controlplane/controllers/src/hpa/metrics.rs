//! Where the HPA gets pod usage: the [`MetricsSource`] trait, the real source reading
//! `metrics.k8s.io/v1beta1` PodMetrics (what metrics-server serves), and the per-pod sums the
//! replica calculator works on (upstream's `rest_metrics_client.go`).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Deserialize;

use super::quantity::{parse_go_duration, parse_milli};

/// One pod's usage of one resource, as the calculator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetric {
    /// Milli-units (millicores for cpu, milli-bytes for memory).
    pub value: i64,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// The window the sample covers.
    pub window: SignedDuration,
}

/// Usage per pod name.
pub type PodMetricsInfo = BTreeMap<String, PodMetric>;

/// One PodMetrics item: a pod's containers and their usage (milli-units per resource).
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Sample time.
    pub timestamp: Timestamp,
    /// Sample window.
    pub window: SignedDuration,
    /// `(container name, usage in milli-units per resource name)`.
    pub containers: Vec<(String, BTreeMap<String, i64>)>,
}

/// Why no metrics could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The metrics API request failed.
    #[error("unable to fetch metrics from resource metrics API: {0}")]
    Fetch(String),
    /// The metrics API answered with no pods.
    #[error("no metrics returned from resource metrics API")]
    Empty,
    /// A `ContainerResource` container is absent from a pod's metrics.
    #[error("failed to get container metrics: container {container} not present in metrics for pod {namespace}/{pod}")]
    ContainerMissing {
        /// Container name.
        container: String,
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
}

/// A source of pod resource usage (the real one is [`MetricsApiSource`]; tests plug in others).
pub trait MetricsSource: Send + Sync {
    /// The PodMetrics of the pods in `namespace` matching `selector` (a label selector string).
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, MetricsError>>;
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector=...`.
pub struct MetricsApiSource {
    client: kube::Client,
    resource: ApiResource,
}

impl MetricsApiSource {
    /// A source reading through `client`.
    pub fn new(client: kube::Client) -> Self {
        let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
        Self {
            client,
            resource: ApiResource::from_gvk_with_plural(&gvk, "pods"),
        }
    }
}

#[derive(Deserialize)]
struct RawContainer {
    name: String,
    #[serde(default)]
    usage: BTreeMap<String, String>,
}

/// The PodMetrics fields besides metadata.
#[derive(Deserialize)]
struct RawPodMetrics {
    timestamp: Option<String>,
    window: Option<String>,
    #[serde(default)]
    containers: Vec<RawContainer>,
}

/// One PodMetrics object (as a DynamicObject) in calculator form; `None` if malformed.
pub fn pod_usage(obj: &DynamicObject) -> Option<PodUsage> {
    let raw: RawPodMetrics = serde_json::from_value(obj.data.clone()).ok()?;
    let timestamp = raw.timestamp.as_deref()?.parse().ok()?;
    let window = raw
        .window
        .as_deref()
        .map_or(Ok(SignedDuration::ZERO), parse_go_duration)
        .ok()?;
    let containers = raw
        .containers
        .into_iter()
        .map(|c| {
            let usage = c
                .usage
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), parse_milli(v).ok()?)))
                .collect();
            (c.name, usage)
        })
        .collect();
    Some(PodUsage {
        name: obj.metadata.name.clone()?,
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        timestamp,
        window,
        containers,
    })
}

impl MetricsSource for MetricsApiSource {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, MetricsError>> {
        Box::pin(async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &self.resource);
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) => MetricsError::Fetch(s.message),
                    e => MetricsError::Fetch(e.to_string()),
                })?;
            Ok(list.items.iter().filter_map(pod_usage).collect())
        })
    }
}

/// Per-pod usage of `resource` (upstream `GetResourceMetric`): summed over containers (a pod
/// missing the resource in any container is left out), or one container's for
/// `ContainerResource`; plus the first item's timestamp.
pub fn resource_metric(
    items: &[PodUsage],
    resource: &str,
    container: Option<&str>,
) -> Result<(PodMetricsInfo, Timestamp), MetricsError> {
    let first = items.first().ok_or(MetricsError::Empty)?;
    let mut out = PodMetricsInfo::new();
    for m in items {
        let metric = |value| PodMetric {
            value,
            timestamp: m.timestamp,
            window: m.window,
        };
        match container {
            Some(name) => {
                let Some((_, usage)) = m.containers.iter().find(|(n, _)| n == name) else {
                    return Err(MetricsError::ContainerMissing {
                        container: name.to_string(),
                        namespace: m.namespace.clone(),
                        pod: m.name.clone(),
                    });
                };
                if let Some(v) = usage.get(resource) {
                    out.insert(m.name.clone(), metric(*v));
                }
            }
            None => {
                let sum: Option<i64> = if m.containers.is_empty() {
                    None
                } else {
                    m.containers
                        .iter()
                        .map(|(_, u)| u.get(resource).copied())
                        .sum()
                };
                if let Some(v) = sum {
                    out.insert(m.name.clone(), metric(v));
                }
            }
        }
    }
    Ok((out, first.timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(name: &str, containers: &[(&str, &[(&str, i64)])]) -> PodUsage {
        PodUsage {
            name: name.into(),
            namespace: "ns".into(),
            timestamp: Timestamp::UNIX_EPOCH,
            window: SignedDuration::from_secs(30),
            containers: containers
                .iter()
                .map(|(n, u)| {
                    (
                        n.to_string(),
                        u.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn sums_containers_and_skips_incomplete_pods() {
        let items = vec![
            item("a", &[("c1", &[("cpu", 100)]), ("c2", &[("cpu", 50)])]),
            item("b", &[("c1", &[("cpu", 100)]), ("c2", &[("memory", 5)])]),
            item("c", &[]),
        ];
        let (m, _) = resource_metric(&items, "cpu", None).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m["a"].value, 150);
        let (m, _) = resource_metric(&items[..2], "cpu", Some("c1")).unwrap();
        assert_eq!((m["a"].value, m["b"].value), (100, 100));
        let (m, _) = resource_metric(&items[..2], "cpu", Some("c2")).unwrap();
        assert_eq!(m.len(), 1);
        assert!(matches!(
            resource_metric(&items, "cpu", Some("c1")),
            Err(MetricsError::ContainerMissing { .. })
        ));
        assert_eq!(resource_metric(&[], "cpu", None), Err(MetricsError::Empty));
    }

    #[test]
    fn parses_pod_metrics_object() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
            "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "timestamp": "2024-01-01T00:00:00Z", "window": "10.5s",
            "containers": [{"name": "c", "usage": {"cpu": "12345678n", "memory": "5Mi"}}],
        }))
        .unwrap();
        let u = pod_usage(&obj).unwrap();
        assert_eq!(u.window, SignedDuration::from_millis(10_500));
        assert_eq!(u.containers[0].1["cpu"], 13);
        assert_eq!(u.containers[0].1["memory"], 5 * 1024 * 1024 * 1000);
    }
}
