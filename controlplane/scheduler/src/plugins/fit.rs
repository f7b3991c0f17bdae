//! NodeResourcesFit (filter + LeastAllocated score) and NodeResourcesBalancedAllocation.

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, PodInfo, PreScorePlugin, ScorePlugin, Snapshot, Status,
    MAX_NODE_SCORE,
};

/// Reasons of NodeResourcesFit for `pod` on `node` (empty when it fits), in upstream's order.
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    let alloc = &node.allocatable;
    if node.pods.len() as i64 + 1 > alloc.allowed_pods {
        out.push("Too many pods".to_string());
    }
    let req = &pod.requests;
    if req.is_zero() {
        return out;
    }
    let used = &node.requested;
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        out.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, &v) in &req.scalar {
        if v == 0 {
            continue;
        }
        let a = alloc.scalar.get(name).copied().unwrap_or(0);
        let u = used.scalar.get(name).copied().unwrap_or(0);
        if v > a - u {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

/// LeastAllocated for one resource: free share after placing the pod, 0..=100.
fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// The LeastAllocated score (cpu and memory, weight 1 each, scoring defaults for missing requests).
pub fn least_allocated_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let a = &node.allocatable;
    let u = &node.non_zero_requested;
    let r = &pod.non_zero_requests;
    let cpu = least_allocated(u.milli_cpu + r.milli_cpu, a.milli_cpu);
    let mem = least_allocated(u.memory + r.memory, a.memory);
    (cpu + mem) / 2
}

/// The BalancedAllocation score: `(1 - stddev of cpu and memory fractions) * 100`.
pub fn balanced_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let a = &node.allocatable;
    let u = &node.requested;
    let r = &pod.requests;
    let frac = |req: i64, cap: i64| {
        if cap == 0 {
            return 0.0;
        }
        (req as f64 / cap as f64).min(1.0)
    };
    let cpu = frac(u.milli_cpu + r.milli_cpu, a.milli_cpu);
    let mem = frac(u.memory + r.memory, a.memory);
    let std = ((cpu - mem) / 2.0).abs();
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// The NodeResourcesFit plugin (filter + LeastAllocated score).
pub struct NodeResourcesFit;

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::ok()
        } else {
            Status {
                code: crate::framework::Code::Unschedulable,
                reasons,
            }
        }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        least_allocated_score(pod, node)
    }
}

/// The NodeResourcesBalancedAllocation plugin (skipped for pods requesting neither cpu nor memory).
pub struct BalancedAllocation;

impl PreScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: Snapshot<'_>,
        _: &[&NodeInfo],
    ) -> Status {
        if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
            Status::skip()
        } else {
            Status::ok()
        }
    }
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        balanced_score(pod, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn req_pod(name: &str, r: Value) -> PodInfo {
        pod_meta(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": r}}]}),
        )
    }

    fn node_with(alloc: Value, pods: &[Value]) -> NodeInfo {
        let mut n = node("n", json!({}), json!({}), alloc);
        for (i, r) in pods.iter().enumerate() {
            n.add_pod(Arc::new(req_pod(&format!("e{i}"), r.clone())));
        }
        n
    }

    #[test]
    fn filter() {
        let alloc = json!({"cpu": "1", "memory": "1Gi", "pods": "3", "ephemeral-storage": "1Gi", "example.com/gpu": "1"});
        let half = json!({"cpu": "500m", "memory": "512Mi"});
        let cases: Vec<(Value, Vec<Value>, Vec<&str>)> = vec![
            (
                json!({"cpu": "500m", "memory": "512Mi"}),
                vec![half.clone()],
                vec![],
            ),
            (
                json!({"cpu": "600m"}),
                vec![half.clone()],
                vec!["Insufficient cpu"],
            ),
            (
                json!({"memory": "600Mi"}),
                vec![half.clone()],
                vec!["Insufficient memory"],
            ),
            (
                json!({"cpu": "600m", "memory": "600Mi"}),
                vec![half.clone()],
                vec!["Insufficient cpu", "Insufficient memory"],
            ),
            (
                json!({}),
                vec![json!({}), json!({}), json!({})],
                vec!["Too many pods"],
            ),
            (
                json!({"cpu": "2"}),
                vec![json!({}), json!({}), json!({})],
                vec!["Too many pods", "Insufficient cpu"],
            ),
            (
                json!({"ephemeral-storage": "2Gi"}),
                vec![],
                vec!["Insufficient ephemeral-storage"],
            ),
            (
                json!({"example.com/gpu": "2"}),
                vec![],
                vec!["Insufficient example.com/gpu"],
            ),
            (
                json!({"example.com/other": "1"}),
                vec![],
                vec!["Insufficient example.com/other"],
            ),
            (
                json!({}),
                vec![json!({"cpu": "1", "memory": "1Gi"})],
                vec![],
            ),
        ];
        for (r, existing, want) in cases {
            let n = node_with(alloc.clone(), &existing);
            assert_eq!(insufficient(&req_pod("p", r.clone()), &n), want, "{r}");
        }
    }

    #[test]
    fn sidecar_and_overhead_count() {
        let p = pod(json!({
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "400m"}}}],
            "initContainers": [{"name": "s", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "400m"}}}],
            "overhead": {"cpu": "300m"},
        }));
        let n = node_with(json!({"cpu": "1", "memory": "1Gi", "pods": "10"}), &[]);
        assert_eq!(insufficient(&p, &n), vec!["Insufficient cpu"]);
    }

    #[test]
    fn least_allocated_and_balanced() {
        // Node 4 cpu / 8Gi with 1 cpu / 2Gi used; pod 1 cpu / 2Gi.
        let n = node_with(
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            &[json!({"cpu": "1", "memory": "2Gi"})],
        );
        let p = req_pod("p", json!({"cpu": "1", "memory": "2Gi"}));
        assert_eq!(least_allocated_score(&p, &n), 50);
        assert_eq!(balanced_score(&p, &n), 100);
        // Unbalanced: cpu 3/4 used, memory 2/8 -> std 0.25 -> 75.
        let p = req_pod("p", json!({"cpu": "2", "memory": "0"}));
        let n2 = node_with(
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            &[json!({"cpu": "1", "memory": "2Gi"})],
        );
        assert_eq!(balanced_score(&p, &n2), 75);
        // Least allocated: cpu (4-3)/4=25, mem (8-2-0.2Gi default)... pod requests memory 0 -> default 200Mi.
        let want_mem = (8192 - 2048 - 200) * 100 / 8192;
        assert_eq!(least_allocated_score(&p, &n2), (25 + want_mem) / 2);
        // Best-effort pod: scoring defaults; balanced is skipped.
        let be = pod(json!({}));
        let s = BalancedAllocation.pre_score(&mut CycleState::default(), &be, empty_snap(), &[]);
        assert_eq!(s.code, crate::framework::Code::Skip);
        // Over capacity scores 0.
        let full = node_with(
            json!({"cpu": "1", "memory": "1Gi", "pods": "10"}),
            &[json!({"cpu": "1", "memory": "1Gi"})],
        );
        assert_eq!(least_allocated_score(&be, &full), 0);
    }

    fn empty_snap() -> Snapshot<'static> {
        static NS: std::sync::OnceLock<
            std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
        > = std::sync::OnceLock::new();
        Snapshot {
            nodes: &[],
            namespaces: NS.get_or_init(Default::default),
        }
    }
}
