//! Builders for plugin table tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::nodeinfo::{NodeInfo, PodInfo};

/// A pod from a spec (name `p`, namespace `default`) with extra metadata merged in.
pub fn pod_meta(name: &str, meta: Value, spec: Value) -> PodInfo {
    let mut m = json!({"name": name, "namespace": "default"});
    if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
        m.extend(extra.clone());
    }
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "img"}]);
    }
    let p: Pod = serde_json::from_value(json!({"metadata": m, "spec": spec})).expect("pod");
    PodInfo::new(Arc::new(p))
}

/// A pod from a spec.
pub fn pod(spec: Value) -> PodInfo {
    pod_meta("p", json!({}), spec)
}

/// A node with labels, spec and allocatable.
pub fn node(name: &str, labels: Value, spec: Value, alloc: Value) -> NodeInfo {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": alloc},
    }))
    .expect("node");
    NodeInfo::new(Arc::new(n))
}

/// A plain node with roomy allocatable.
pub fn plain(name: &str) -> NodeInfo {
    node(
        name,
        json!({}),
        json!({}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
    )
}
