//! Which nodes a DaemonSet's pods belong on (upstream `NodeShouldRunDaemonPod`): the template's
//! `nodeName`, `nodeSelector` and required node affinity must match the node, and its
//! NoSchedule/NoExecute taints must be tolerated — with the tolerations every daemon pod gets
//! (upstream `AddOrUpdateDaemonPodTolerations`), so not-ready, unreachable, pressured and
//! cordoned nodes still run them. Also the node a daemon pod targets and the affinity that
//! pins a new pod to its node (upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`).

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};

/// The field a daemon pod's node affinity pins (`metadata.name`).
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// `(taint key, effect)` of the tolerations every daemon pod gets.
pub const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// The toleration host-network daemon pods get as well.
pub const NETWORK_UNAVAILABLE: (&str, &str) =
    ("node.kubernetes.io/network-unavailable", "NoSchedule");

/// Adds the default daemon tolerations to `spec` (an existing toleration of the same key and
/// effect is replaced, as upstream's `AddOrUpdateTolerationInPodSpec`).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted: Vec<(&str, &str)> = DEFAULT_TOLERATIONS.to_vec();
    if spec.host_network == Some(true) {
        wanted.push(NETWORK_UNAVAILABLE);
    }
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        match tols
            .iter_mut()
            .find(|x| x.key.as_deref() == Some(key) && x.effect.as_deref() == Some(effect))
        {
            Some(x) => *x = t,
            None => tols.push(t),
        }
    }
}

// Toleration and node-selector-term matching are the scheduler's own (one reading of the
// upstream rules for both): the DaemonSet must place pods exactly where the scheduler would
// accept them.
pub use kennel_scheduler::plugins::taints::tolerates;
pub use kennel_scheduler::selector::term_matches;

/// Upstream `GetRequiredNodeAffinity(pod).Match(node)`: the `nodeSelector` and any of the
/// required node affinity terms.
pub fn affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| {
            r.node_selector_terms
                .iter()
                .any(|t| term_matches(t, name, &labels))
        })
}

/// Whether a daemon pod should run on a node and whether one already there may keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// A daemon pod should run there.
    pub should_run: bool,
    /// A daemon pod already there may stay (it tolerates every NoExecute taint).
    pub should_continue: bool,
}

/// Upstream `NodeShouldRunDaemonPod` for a DaemonSet whose pod template spec is `template`.
pub fn node_should_run(template: &PodSpec, node: &Node) -> Fit {
    const NO: Fit = Fit {
        should_run: false,
        should_continue: false,
    };
    let name = node.metadata.name.as_deref().unwrap_or("");
    if template
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return NO;
    }
    if !affinity_matches(template, node) {
        return NO;
    }
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    let tols = spec.tolerations.unwrap_or_default();
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == effect)
            .any(|taint| !tols.iter().any(|t| tolerates(t, taint)))
    };
    let no_execute = untolerated("NoExecute");
    let no_schedule = untolerated("NoSchedule");
    Fit {
        should_run: !no_execute && !no_schedule,
        should_continue: !no_execute,
    }
}

/// The node a daemon pod is on or pinned to (upstream `GetTargetNodeName`): `spec.nodeName`,
/// else the single `metadata.name` In value of its required node affinity.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NODE_NAME_FIELD && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([v]) => Some(v.clone()),
            _ => None,
        })
}

/// Pins `affinity` to `node` (upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`): the
/// required node selector becomes the one term `metadata.name In [node]` (the controller has
/// already checked the node matches the template's own terms); preferred terms stay.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    };
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(selector);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn node(v: Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn spec(v: Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(v).expect("spec")
    }

    fn fit(run: bool, cont: bool) -> Fit {
        Fit {
            should_run: run,
            should_continue: cont,
        }
    }

    #[test]
    fn eligibility_table() {
        let plain = json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "gen": "5"}}});
        let taint = |key: &str, effect: &str| {
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [
                {"key": key, "value": "v", "effect": effect}]}})
        };
        let cases = [
            ("no constraints", json!({}), plain.clone(), fit(true, true)),
            (
                "nodeName elsewhere",
                json!({"nodeName": "n2"}),
                plain.clone(),
                fit(false, false),
            ),
            (
                "nodeName here",
                json!({"nodeName": "n1"}),
                plain.clone(),
                fit(true, true),
            ),
            (
                "nodeSelector matches",
                json!({"nodeSelector": {"disk": "ssd"}}),
                plain.clone(),
                fit(true, true),
            ),
            (
                "nodeSelector differs",
                json!({"nodeSelector": {"disk": "hdd"}}),
                plain.clone(),
                fit(false, false),
            ),
            (
                "affinity Gt",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "gen", "operator": "Gt", "values": ["4"]}]}]}}}}),
                plain.clone(),
                fit(true, true),
            ),
            (
                "affinity terms ORed, none match",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}]}}}}),
                plain.clone(),
                fit(false, false),
            ),
            (
                "affinity matchFields name",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
                plain.clone(),
                fit(true, true),
            ),
            (
                "untolerated NoSchedule: no new pod, existing stays",
                json!({}),
                taint("dedicated", "NoSchedule"),
                fit(false, true),
            ),
            (
                "untolerated NoExecute: evict",
                json!({}),
                taint("dedicated", "NoExecute"),
                fit(false, false),
            ),
            (
                "PreferNoSchedule ignored",
                json!({}),
                taint("dedicated", "PreferNoSchedule"),
                fit(true, true),
            ),
            (
                "tolerated by Equal",
                json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "v",
                    "effect": "NoSchedule"}]}),
                taint("dedicated", "NoSchedule"),
                fit(true, true),
            ),
            (
                "wrong value not tolerated",
                json!({"tolerations": [{"key": "dedicated", "value": "w"}]}),
                taint("dedicated", "NoSchedule"),
                fit(false, true),
            ),
            (
                "tolerate everything",
                json!({"tolerations": [{"operator": "Exists"}]}),
                taint("dedicated", "NoExecute"),
                fit(true, true),
            ),
            (
                "default: unschedulable tolerated",
                json!({}),
                taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                fit(true, true),
            ),
            (
                "default: not-ready NoExecute tolerated",
                json!({}),
                taint("node.kubernetes.io/not-ready", "NoExecute"),
                fit(true, true),
            ),
            (
                "default: memory-pressure tolerated",
                json!({}),
                taint("node.kubernetes.io/memory-pressure", "NoSchedule"),
                fit(true, true),
            ),
            (
                "network-unavailable only for hostNetwork",
                json!({}),
                taint("node.kubernetes.io/network-unavailable", "NoSchedule"),
                fit(false, true),
            ),
            (
                "network-unavailable with hostNetwork",
                json!({"hostNetwork": true}),
                taint("node.kubernetes.io/network-unavailable", "NoSchedule"),
                fit(true, true),
            ),
        ];
        for (what, s, n, want) in cases {
            assert_eq!(node_should_run(&spec(s), &node(n)), want, "{what}");
        }
        // A cordoned node (spec.unschedulable) still gets its daemon pod.
        let cordoned = node(json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}}));
        assert_eq!(
            node_should_run(&spec(json!({})), &cordoned),
            fit(true, true)
        );
    }

    #[test]
    fn default_tolerations_added_once() {
        let mut s = spec(json!({"hostNetwork": true, "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Equal", "value": "x",
             "effect": "NoSchedule"},
            {"key": "own", "operator": "Exists"}]}));
        add_daemon_tolerations(&mut s);
        add_daemon_tolerations(&mut s);
        let tols = s.tolerations.expect("tolerations");
        assert_eq!(tols.len(), 8, "{tols:?}");
        let u = tols
            .iter()
            .find(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
            .expect("unschedulable");
        assert_eq!(u.operator.as_deref(), Some("Exists"));
        assert!(tols
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
    }

    #[test]
    fn pinning_and_target() {
        let a = pin_to_node(None, "n3");
        let mut pod = Pod {
            spec: Some(PodSpec {
                affinity: Some(a.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_node(&pod).as_deref(), Some("n3"));
        pod.spec.as_mut().expect("spec").node_name = Some("n4".into());
        assert_eq!(target_node(&pod).as_deref(), Some("n4"));
        // Existing required terms are replaced, preferred ones kept.
        let existing: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference":
                {"matchExpressions": [{"key": "z", "operator": "Exists"}]}}]}}))
        .expect("affinity");
        let pinned = pin_to_node(Some(existing), "n1");
        let na = pinned.node_affinity.expect("node affinity");
        let terms = &na
            .required_during_scheduling_ignored_during_execution
            .expect("required")
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert!(terms[0].match_expressions.is_none());
        assert_eq!(
            na.preferred_during_scheduling_ignored_during_execution
                .map(|p| p.len()),
            Some(1)
        );
        assert_eq!(target_node(&Pod::default()), None);
    }
}
