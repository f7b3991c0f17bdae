//! NodeAffinity: `nodeSelector` AND required node affinity filter; preferred terms score.

use crate::framework::{default_normalize, CycleState, FilterPlugin, ScorePlugin, Status};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::selector::term_matches;

/// Reason of NodeAffinity.
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether the pod's `nodeSelector` and required node affinity (terms ORed) admit `node`.
pub fn node_affinity_fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return true;
    };
    let labels = node.labels();
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(r) => r
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, &node.name, labels)),
    }
}

/// Sum of the weights of the preferred terms that match `node`.
pub fn preferred_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let preferred = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        });
    preferred
        .into_iter()
        .flatten()
        .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.name, node.labels()))
        .map(|p| p.weight as i64)
        .sum()
}

/// The NodeAffinity plugin.
pub struct NodeAffinity;

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if node_affinity_fits(pod, node) {
            Status::ok()
        } else {
            Status::unresolvable(ERR_NODE_AFFINITY)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        preferred_score(pod, node)
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;

    fn req(terms: serde_json::Value) -> serde_json::Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    #[test]
    fn filter() {
        let n = node(
            "n1",
            json!({"zone": "a", "disk": "ssd"}),
            json!({}),
            json!({}),
        );
        let zone_in = |z: &str| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [z]}]});
        let mut both = req(json!([zone_in("a")]));
        both["nodeSelector"] = json!({"disk": "hdd"});
        let cases = [
            (json!({}), true),
            (json!({"nodeSelector": {"zone": "a"}}), true),
            (json!({"nodeSelector": {"zone": "b"}}), false),
            (json!({"nodeSelector": {"zone": "a", "disk": "ssd"}}), true),
            (req(json!([zone_in("a")])), true),
            (req(json!([zone_in("b")])), false),
            (req(json!([zone_in("b"), zone_in("a")])), true),
            (req(json!([])), false),
            (req(json!([{}])), false),
            (
                req(
                    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
                ),
                true,
            ),
            (both, false),
        ];
        for (spec, want) in cases {
            let s = NodeAffinity.filter(&CycleState::default(), &pod(spec.clone()), &n);
            assert_eq!(s.is_success(), want, "{spec}");
            if !want {
                assert_eq!(s.reasons, vec![ERR_NODE_AFFINITY.to_string()]);
            }
        }
    }

    #[test]
    fn score() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 2, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 8, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
            ]}}}),
        );
        let nodes = [
            node("n1", json!({}), json!({}), json!({})),
            node("n2", json!({"zone": "a"}), json!({}), json!({})),
            node(
                "n3",
                json!({"zone": "a", "disk": "x"}),
                json!({}),
                json!({}),
            ),
        ];
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| NodeAffinity.score(&CycleState::default(), &p, n))
            .collect();
        assert_eq!(s, [0, 2, 10]);
        NodeAffinity.normalize(&CycleState::default(), &mut s);
        assert_eq!(s, [0, 20, 100]);
    }
}
