//! DefaultPreemption: when a pod fits nowhere, find nodes where evicting lower-priority pods
//! would make it fit, keep as many of them as possible (highest priority first), and pick the
//! node with the lowest highest-victim priority, then the lowest priority sum, then the fewest
//! victims. PodDisruptionBudgets and nominated pods of other preemptors are not considered.

use std::sync::Arc;

use crate::framework::{
    Code, NodeInfo, PodInfo, PostFilterPlugin, PostFilterResult, Profile, Snapshot, Status,
};
use crate::message::{histogram, nodes_available};

/// Reason for nodes whose failure eviction cannot fix.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Reason for nodes without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// The DefaultPreemption plugin.
pub struct DefaultPreemption;

fn not_eligible(pod: &PodInfo, snap: Snapshot<'_>) -> Option<&'static str> {
    let spec = pod.pod.spec.as_ref()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod.pod.status.as_ref()?.nominated_node_name.as_deref()?;
    let node = snap.nodes.iter().find(|n| n.name == nominated)?;
    node.pods
        .values()
        .any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some())
        .then_some("not eligible due to a terminating pod on the nominated node.")
}

/// The victims needed on `node` for `pod`, or the status explaining why eviction cannot help.
pub fn select_victims(
    profile: &Profile,
    pod: &PodInfo,
    snap: Snapshot<'_>,
    node: &NodeInfo,
) -> Result<Vec<Arc<PodInfo>>, Status> {
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    let mut n = node.clone();
    for v in &lower {
        n.remove_pod(&v.key);
    }
    let (state, pre) = profile.run_pre_filters(pod, snap);
    if !pre.is_success() {
        return Err(pre);
    }
    let s = profile.run_filters(&state, pod, &n);
    if !s.is_success() {
        return Err(s);
    }
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
    let mut victims = Vec::new();
    for v in lower {
        n.add_pod(v.clone());
        if !profile.run_filters(&state, pod, &n).is_success() {
            n.remove_pod(&v.key);
            victims.push(v);
        }
    }
    Ok(victims)
}

impl PostFilterPlugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }
    fn post_filter(
        &self,
        profile: &Profile,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        failed: &[(usize, Status)],
    ) -> PostFilterResult {
        if let Some(why) = not_eligible(pod, snap) {
            return PostFilterResult {
                message: format!("preemption: {why}"),
                ..Default::default()
            };
        }
        let mut statuses = Vec::new();
        let mut best: Option<(usize, Vec<Arc<PodInfo>>)> = None;
        let rank = |v: &[Arc<PodInfo>]| {
            let max = v.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
            let sum: i64 = v.iter().map(|p| p.priority as i64).sum();
            (max, sum, v.len())
        };
        for (i, st) in failed {
            if st.code == Code::UnschedulableAndUnresolvable {
                statuses.push(Status::unresolvable(NOT_HELPFUL));
                continue;
            }
            match select_victims(profile, pod, snap, &snap.nodes[*i]) {
                Err(s) => statuses.push(s),
                Ok(v) => {
                    if best.as_ref().is_none_or(|(_, b)| rank(&v) < rank(b)) {
                        best = Some((*i, v));
                    }
                }
            }
        }
        match best {
            Some((i, victims)) => PostFilterResult {
                nominated_node: Some(snap.nodes[i].name.clone()),
                victims,
                message: String::new(),
            },
            None => PostFilterResult {
                message: format!(
                    "preemption: {}",
                    nodes_available(snap.nodes.len(), &histogram(statuses.iter()))
                ),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::standalone_profile;
    use crate::plugins::testutil::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn prio(name: &str, p: i32, cpu: &str) -> PodInfo {
        pod_meta(
            name,
            json!({}),
            json!({"priority": p, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    fn small(name: &str, pods: &[PodInfo]) -> NodeInfo {
        let mut n = node(
            name,
            json!({}),
            json!({}),
            json!({"cpu": "1", "memory": "1Gi", "pods": "10"}),
        );
        for p in pods {
            n.add_pod(Arc::new(p.clone()));
        }
        n
    }

    #[test]
    fn picks_lowest_priority_victims() {
        let profile = standalone_profile("default-scheduler", None);
        let nodes = vec![
            small("a", &[prio("a1", 5, "500m"), prio("a2", 5, "500m")]),
            small("b", &[prio("b1", 1, "500m"), prio("b2", 100, "500m")]),
            small("c", &[prio("c1", 1000, "1")]),
        ];
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespaces: &ns,
        };
        let mut rotor = Default::default();
        let p = prio("p", 500, "500m");
        let err = profile.schedule(&p, snap, &mut rotor).unwrap_err();
        assert_eq!(err.post_filter.nominated_node.as_deref(), Some("b"));
        let v: Vec<&str> = err
            .post_filter
            .victims
            .iter()
            .map(|v| v.key.as_str())
            .collect();
        assert_eq!(v, ["default/b1"]);
        assert_eq!(
            err.message(),
            "0/3 nodes are available: 3 Insufficient cpu."
        );
    }

    #[test]
    fn messages_when_preemption_cannot_help() {
        let profile = standalone_profile("default-scheduler", None);
        let mut tainted = node(
            "t",
            json!({}),
            json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            json!({"cpu": "1", "memory": "1Gi", "pods": "10"}),
        );
        tainted.add_pod(Arc::new(prio("t1", 0, "1")));
        let nodes = vec![small("a", &[prio("a1", 0, "1")]), tainted];
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespaces: &ns,
        };
        let mut rotor = Default::default();
        let err = profile
            .schedule(&prio("p", 0, "500m"), snap, &mut rotor)
            .unwrap_err();
        assert_eq!(
            err.message(),
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: }. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        let never = pod_meta(
            "p",
            json!({}),
            json!({"preemptionPolicy": "Never", "priority": 10, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2"}}}]}),
        );
        let err = profile.schedule(&never, snap, &mut rotor).unwrap_err();
        assert!(
            err.message()
                .ends_with("preemption: not eligible due to preemptionPolicy=Never."),
            "{}",
            err.message()
        );
    }
}
