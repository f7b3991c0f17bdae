//! The resource metrics API (`metrics.k8s.io/v1beta1`, what metrics-server serves and
//! `kubectl top` and the HorizontalPodAutoscaler read): NodeMetrics and PodMetrics built on
//! request from each node agent's `/stats/summary`. Pods and nodes without a usage rate yet
//! are left out, as metrics-server does.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::log::{node_access, request};
use super::{decode_as, json_response, ApiState};
use crate::registry;
use crate::request::{Query, Target};
use crate::selectors::LabelSelector;
use crate::status::ApiError;

/// Largest summary accepted from a node.
const MAX_SUMMARY: usize = 16 * 1024 * 1024;

/// Serves a `metrics.k8s.io` GET.
pub async fn handle(state: &ApiState, t: &Target, query: &Query) -> Response {
    match serve(state, t, query).await {
        Ok(v) => json_response(StatusCode::OK, &v, &[]),
        Err(e) => e.into_response(),
    }
}

async fn serve(state: &ApiState, t: &Target, query: &Query) -> Result<Value, ApiError> {
    let selector = match query.get("labelSelector") {
        Some(s) if !s.is_empty() => {
            Some(LabelSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
        _ => None,
    };
    let matches = |labels: &Value| {
        selector.as_ref().is_none_or(|s| {
            let labels: BTreeMap<String, String> = labels
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            s.matches(&labels)
        })
    };
    match t.def.plural {
        "nodes" => {
            let nodes = objects(state, "nodes", None).await?;
            let mut items = Vec::new();
            for n in nodes.iter().filter(|n| {
                t.name.as_deref().is_none_or(|w| n["metadata"]["name"] == w)
                    && matches(&n["metadata"]["labels"])
            }) {
                let name = n["metadata"]["name"].as_str().unwrap_or("");
                let Some(summary) = summary(state, name).await else {
                    continue;
                };
                if let Some(m) = node_metrics(n, &summary) {
                    items.push(m);
                }
            }
            finish(t, items, "NodeMetrics")
        }
        "pods" => {
            let pods = objects(state, "pods", t.namespace.as_deref()).await?;
            let wanted: Vec<&Value> = pods
                .iter()
                .filter(|p| {
                    t.name.as_deref().is_none_or(|w| p["metadata"]["name"] == w)
                        && matches(&p["metadata"]["labels"])
                        && p["spec"]["nodeName"]
                            .as_str()
                            .is_some_and(|n| !n.is_empty())
                })
                .collect();
            let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
            for p in wanted {
                by_node
                    .entry(p["spec"]["nodeName"].as_str().unwrap_or(""))
                    .or_default()
                    .push(p);
            }
            let mut items = Vec::new();
            for (node, pods) in by_node {
                let Some(summary) = summary(state, node).await else {
                    continue;
                };
                let by_uid: HashMap<&str, &Value> = summary["pods"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["podRef"]["uid"].as_str().map(|u| (u, p)))
                    .collect();
                for p in pods {
                    let uid = p["metadata"]["uid"].as_str().unwrap_or("");
                    if let Some(m) = by_uid.get(uid).and_then(|s| pod_metrics(p, s, &summary)) {
                        items.push(m);
                    }
                }
            }
            finish(t, items, "PodMetrics")
        }
        _ => Err(ApiError::UnknownResource),
    }
}

fn finish(t: &Target, items: Vec<Value>, kind: &str) -> Result<Value, ApiError> {
    if let Some(name) = &t.name {
        return items.into_iter().next().ok_or_else(|| ApiError::NotFound {
            resource: t.def.qualified(),
            name: name.clone(),
        });
    }
    Ok(json!({
        "kind": format!("{kind}List"), "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {}, "items": items,
    }))
}

async fn objects(state: &ApiState, plural: &str, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let def = registry::find("", "v1", plural).expect("core resource registered");
    let page = state
        .store
        .list(&def.list_prefix(ns), 0, None)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    page.items.iter().map(|kv| decode_as(def, kv)).collect()
}

/// The node's summary, or `None` (logged) when it cannot be had.
async fn summary(state: &ApiState, node: &str) -> Option<Value> {
    let fetch = async {
        let (client, host, port) = node_access(state, node).await.map_err(|e| e.to_string())?;
        let resp = request(&client, &host, port, "/stats/summary")
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("node answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_SUMMARY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
    };
    match fetch.await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(node, error = %e, "no resource metrics from node");
            None
        }
    }
}

/// `cpu` in nanocores (`123n`) and `memory` in KiB (`456Ki`), as metrics-server writes them.
fn usage(cpu_nanos: u64, mem_bytes: u64) -> Value {
    json!({"cpu": format!("{cpu_nanos}n"), "memory": format!("{}Ki", mem_bytes / 1024)})
}

fn window(summary: &Value) -> String {
    match summary["window"]
        .as_str()
        .and_then(|w| w.strip_suffix("ms"))
        .and_then(|ms| ms.parse::<f64>().ok())
    {
        Some(ms) => format!("{:.3}s", ms / 1000.0),
        None => "0s".into(),
    }
}

fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let s = &summary["node"];
    let cpu = s["cpu"]["usageNanoCores"].as_u64()?;
    let mem = s["memory"]["workingSetBytes"].as_u64()?;
    Some(json!({
        "metadata": {"name": node["metadata"]["name"], "labels": node["metadata"]["labels"],
            "creationTimestamp": crate::defaults::now_rfc3339()},
        "timestamp": s["cpu"]["time"], "window": window(summary),
        "usage": usage(cpu, mem),
    }))
}

fn pod_metrics(pod: &Value, s: &Value, summary: &Value) -> Option<Value> {
    let mut containers = Vec::new();
    for c in s["containers"].as_array().into_iter().flatten() {
        let cpu = c["cpu"]["usageNanoCores"].as_u64()?;
        let mem = c["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
        containers.push(json!({"name": c["name"], "usage": usage(cpu, mem)}));
    }
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
            "labels": pod["metadata"]["labels"], "creationTimestamp": crate::defaults::now_rfc3339()},
        "timestamp": s["cpu"]["time"], "window": window(summary),
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_a_summary() {
        let summary = json!({
            "node": {"cpu": {"time": "2026-12-03T10:00:00Z", "usageNanoCores": 250_000_000u64},
                     "memory": {"workingSetBytes": 2048u64 * 1024 * 1024}},
            "pods": [{"podRef": {"uid": "u1"}, "cpu": {"time": "2026-12-03T10:00:00Z"},
                      "containers": [{"name": "main", "cpu": {"usageNanoCores": 5_000_000u64},
                                      "memory": {"workingSetBytes": 10u64 * 1024 * 1024}}]}],
            "window": "15000ms",
        });
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &summary).unwrap();
        assert_eq!(
            m["usage"],
            json!({"cpu": "250000000n", "memory": "2097152Ki"})
        );
        assert_eq!(m["window"], "15.000s");
        let pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u1"}});
        let m = pod_metrics(&pod, &summary["pods"][0], &summary).unwrap();
        assert_eq!(m["containers"][0]["usage"]["cpu"], "5000000n");
        assert_eq!(m["containers"][0]["usage"]["memory"], "10240Ki");
        // No rate yet: left out.
        let fresh = json!({"containers": [{"name": "main", "cpu": {"usageCoreNanoSeconds": 5}}]});
        assert!(pod_metrics(&pod, &fresh, &summary).is_none());
    }
}
