//! NodeName and NodeUnschedulable.

use crate::framework::{CycleState, FilterPlugin, Status};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::plugins::taints::tolerates;
use k8s_openapi::api::core::v1::Taint;

/// Reason of NodeName.
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// Reason of NodeUnschedulable.
pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// The taint key a cordoned node implies.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// `spec.nodeName`, when set, must name the node.
pub fn node_name_fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        None | Some("") => true,
        Some(n) => n == node.name,
    }
}

/// A cordoned node (`spec.unschedulable`) takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn unschedulable_fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    if !node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        return true;
    }
    let taint = Taint {
        key: UNSCHEDULABLE_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    pod.tolerations().iter().any(|t| tolerates(t, &taint))
}

/// The NodeName filter.
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if node_name_fits(pod, node) {
            Status::ok()
        } else {
            Status::unresolvable(ERR_NODE_NAME)
        }
    }
}

/// The NodeUnschedulable filter.
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if unschedulable_fits(pod, node) {
            Status::ok()
        } else {
            Status::unresolvable(ERR_UNSCHEDULABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;

    #[test]
    fn node_name() {
        let n = plain("n1");
        for (spec, want) in [
            (json!({}), true),
            (json!({"nodeName": ""}), true),
            (json!({"nodeName": "n1"}), true),
            (json!({"nodeName": "n2"}), false),
        ] {
            assert_eq!(node_name_fits(&pod(spec.clone()), &n), want, "{spec}");
        }
    }

    #[test]
    fn unschedulable() {
        let cordoned = node("n", json!({}), json!({"unschedulable": true}), json!({}));
        let open = node("n", json!({}), json!({"unschedulable": false}), json!({}));
        let tol = |t: serde_json::Value| json!({"tolerations": [t]});
        let cases = [
            (&open, json!({}), true),
            (&cordoned, json!({}), false),
            (
                &cordoned,
                tol(
                    json!({"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}),
                ),
                true,
            ),
            (
                &cordoned,
                tol(json!({"key": UNSCHEDULABLE_TAINT, "operator": "Exists"})),
                true,
            ),
            (&cordoned, tol(json!({"operator": "Exists"})), true),
            (
                &cordoned,
                tol(
                    json!({"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}),
                ),
                false,
            ),
            (
                &cordoned,
                tol(json!({"key": "other", "operator": "Exists"})),
                false,
            ),
        ];
        for (n, spec, want) in cases {
            assert_eq!(unschedulable_fits(&pod(spec.clone()), n), want, "{spec}");
        }
    }
}
