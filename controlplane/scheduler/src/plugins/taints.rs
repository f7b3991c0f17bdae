//! TaintToleration: NoSchedule/NoExecute taints filter, PreferNoSchedule taints score.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{default_normalize, CycleState, FilterPlugin, ScorePlugin, Status};
use crate::nodeinfo::{NodeInfo, PodInfo};

/// Whether `t` tolerates `taint` (upstream `Toleration.ToleratesTaint`): an empty effect
/// matches every effect, an empty key (with `Exists`) every key.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The first NoSchedule/NoExecute taint of `node` that `pod` does not tolerate.
pub fn untolerated<'a>(pod: &PodInfo, node: &'a NodeInfo) -> Option<&'a Taint> {
    taints(node).iter().find(|taint| {
        (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !pod.tolerations().iter().any(|t| tolerates(t, taint))
    })
}

/// The reason for an untolerated taint, as upstream words it.
pub fn untolerated_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

/// Number of PreferNoSchedule taints the pod's PreferNoSchedule (or effect-less) tolerations
/// do not tolerate.
pub fn intolerable_prefer_no_schedule(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let tols: Vec<&Toleration> = pod
        .tolerations()
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    taints(node)
        .iter()
        .filter(|taint| taint.effect == "PreferNoSchedule")
        .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
        .count() as i64
}

/// The TaintToleration plugin.
pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match untolerated(pod, node) {
            None => Status::ok(),
            Some(t) => Status::unresolvable(untolerated_reason(t)),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        intolerable_prefer_no_schedule(pod, node)
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::{json, Value};

    fn tol(v: Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }
    fn taint(v: Value) -> Taint {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_matching() {
        let t = taint(json!({"key": "k", "value": "v", "effect": "NoSchedule"}));
        let cases = [
            (
                json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}),
                true,
            ),
            (
                json!({"key": "k", "value": "v", "effect": "NoSchedule"}),
                true,
            ),
            (
                json!({"key": "k", "operator": "Equal", "value": "x", "effect": "NoSchedule"}),
                false,
            ),
            (
                json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"}),
                true,
            ),
            (json!({"key": "k", "operator": "Exists"}), true),
            (
                json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}),
                false,
            ),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (
                json!({"operator": "Exists", "effect": "PreferNoSchedule"}),
                false,
            ),
            (json!({"key": "other", "operator": "Exists"}), false),
            (
                json!({"key": "k", "operator": "Bogus", "value": "v"}),
                false,
            ),
        ];
        for (tv, want) in cases {
            assert_eq!(tolerates(&tol(tv.clone()), &t), want, "{tv}");
        }
    }

    fn tainted(taints: Value) -> NodeInfo {
        node("n", json!({}), json!({"taints": taints}), json!({}))
    }

    #[test]
    fn filter() {
        let cp = json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        let cases = [
            (json!([]), json!({}), None),
            (
                cp.clone(),
                json!({}),
                Some("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
            ),
            (
                cp.clone(),
                json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}),
                None,
            ),
            (
                json!([{"key": "a", "value": "b", "effect": "NoExecute"}]),
                json!({}),
                Some("node(s) had untolerated taint {a: b}"),
            ),
            (
                json!([{"key": "a", "value": "b", "effect": "PreferNoSchedule"}]),
                json!({}),
                None,
            ),
            (
                json!([{"key": "a", "value": "b", "effect": "NoSchedule"}, {"key": "c", "effect": "NoSchedule"}]),
                json!({"tolerations": [{"key": "a", "value": "b"}]}),
                Some("node(s) had untolerated taint {c: }"),
            ),
        ];
        for (taints, spec, want) in cases {
            let s = TaintToleration.filter(
                &CycleState::default(),
                &pod(spec.clone()),
                &tainted(taints.clone()),
            );
            match want {
                None => assert!(s.is_success(), "{taints} {spec}"),
                Some(r) => {
                    assert_eq!(s.code, crate::framework::Code::UnschedulableAndUnresolvable);
                    assert_eq!(s.reasons, vec![r.to_string()]);
                }
            }
        }
    }

    #[test]
    fn score() {
        let nodes = [
            tainted(json!([])),
            tainted(json!([{"key": "a", "effect": "PreferNoSchedule"}])),
            tainted(
                json!([{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]),
            ),
        ];
        let p = pod(json!({}));
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| TaintToleration.score(&CycleState::default(), &p, n))
            .collect();
        assert_eq!(s, [0, 1, 2]);
        TaintToleration.normalize(&CycleState::default(), &mut s);
        assert_eq!(s, [100, 50, 0]);
        // A PreferNoSchedule toleration removes the penalty; a NoSchedule one does not.
        let p = pod(
            json!({"tolerations": [{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"}, {"key": "b", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            TaintToleration.score(&CycleState::default(), &p, &nodes[2]),
            1
        );
    }
}
