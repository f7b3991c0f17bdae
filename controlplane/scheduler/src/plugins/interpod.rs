//! InterPodAffinity: required pod affinity / anti-affinity (the incoming pod's and, symmetrically,
//! existing pods' anti-affinity) filter per topology domain; the incoming pod's preferred terms score.
//!
//! Namespaces of a term: `namespaces` ∪ namespaces whose labels match `namespaceSelector` (from
//! the Namespace objects the scheduler watches; `{}` matches every namespace); neither set means
//! the pod's own namespace. `matchLabelKeys`/`mismatchLabelKeys` are not applied.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::PodAffinityTerm;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, PodInfo, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Snapshot, Status, MAX_NODE_SCORE,
};
use crate::selector::label_selector_matches;

/// Reason: the pod's required affinity is not satisfied.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason: the pod's required anti-affinity is violated.
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Reason: an existing pod's anti-affinity forbids the pod.
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

const KEY: &str = "InterPodAffinity";
const SCORE_KEY: &str = "InterPodAffinity/score";

type Topo = (String, String);

/// Whether `target` (in `target_ns`, with `labels`) is selected by `term` owned by a pod in `owner_ns`.
pub fn term_matches_pod(
    term: &PodAffinityTerm,
    owner_ns: &str,
    target_ns: &str,
    labels: &BTreeMap<String, String>,
    ns_labels: &HashMap<String, BTreeMap<String, String>>,
) -> bool {
    let names = term.namespaces.as_deref().unwrap_or_default();
    let ns_ok = if names.is_empty() && term.namespace_selector.is_none() {
        target_ns == owner_ns
    } else {
        names.iter().any(|n| n == target_ns)
            || term.namespace_selector.as_ref().is_some_and(|sel| {
                let empty = BTreeMap::new();
                label_selector_matches(Some(sel), ns_labels.get(target_ns).unwrap_or(&empty))
            })
    };
    ns_ok && label_selector_matches(term.label_selector.as_ref(), labels)
}

#[derive(Default)]
struct PreState {
    existing_anti: HashMap<Topo, usize>,
    affinity: HashMap<Topo, usize>,
    anti: HashMap<Topo, usize>,
    /// The pod matches all of its own required affinity terms.
    self_match: bool,
}

fn topo_of(node: &NodeInfo, key: &str) -> Option<Topo> {
    node.labels().get(key).map(|v| (key.to_string(), v.clone()))
}

/// The InterPodAffinity plugin.
pub struct InterPodAffinity;

impl PreFilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: Snapshot<'_>) -> Status {
        let mut st = PreState::default();
        let has_own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        for node in snap.nodes {
            if node.pods_with_required_anti_affinity == 0 && !has_own {
                continue;
            }
            for e in node.pods.values() {
                for t in &e.required_anti_affinity {
                    if term_matches_pod(
                        t,
                        &e.namespace,
                        &pod.namespace,
                        pod.labels(),
                        snap.namespaces,
                    ) {
                        if let Some(tp) = topo_of(node, &t.topology_key) {
                            *st.existing_anti.entry(tp).or_default() += 1;
                        }
                    }
                }
                if !has_own {
                    continue;
                }
                for (terms, counts) in [
                    (&pod.required_affinity, &mut st.affinity),
                    (&pod.required_anti_affinity, &mut st.anti),
                ] {
                    for t in terms {
                        if term_matches_pod(
                            t,
                            &pod.namespace,
                            &e.namespace,
                            e.labels(),
                            snap.namespaces,
                        ) {
                            if let Some(tp) = topo_of(node, &t.topology_key) {
                                *counts.entry(tp).or_default() += 1;
                            }
                        }
                    }
                }
            }
        }
        st.self_match = pod.required_affinity.iter().all(|t| {
            term_matches_pod(
                t,
                &pod.namespace,
                &pod.namespace,
                pod.labels(),
                snap.namespaces,
            )
        });
        state.write(KEY, st);
        Status::ok()
    }
}

fn satisfies_affinity(st: &PreState, pod: &PodInfo, node: &NodeInfo) -> bool {
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        match topo_of(node, &t.topology_key) {
            None => return false,
            Some(tp) => {
                if st.affinity.get(&tp).copied().unwrap_or(0) == 0 {
                    pods_exist = false;
                }
            }
        }
    }
    if pods_exist {
        return true;
    }
    // No matching pod anywhere yet: the first pod of a group that matches its own terms may go.
    st.affinity.is_empty() && st.self_match
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.read::<PreState>(KEY) else {
            return Status::ok();
        };
        if !satisfies_affinity(st, pod, node) {
            return Status::unresolvable(ERR_AFFINITY);
        }
        for t in &pod.required_anti_affinity {
            if let Some(tp) = topo_of(node, &t.topology_key) {
                if st.anti.get(&tp).copied().unwrap_or(0) > 0 {
                    return Status::unschedulable(ERR_ANTI_AFFINITY);
                }
            }
        }
        if !st.existing_anti.is_empty() {
            for (k, v) in node.labels() {
                if st
                    .existing_anti
                    .get(&(k.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    > 0
                {
                    return Status::unschedulable(ERR_EXISTING_ANTI_AFFINITY);
                }
            }
        }
        Status::ok()
    }
}

/// Per topology pair: the summed weights of the pod's preferred terms its pods match.
struct ScoreState(HashMap<Topo, i64>);

impl PreScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        _: &[&NodeInfo],
    ) -> Status {
        let aff = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pref = aff
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        let anti = aff
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        if pref.is_empty() && anti.is_empty() {
            return Status::skip();
        }
        let mut m: HashMap<Topo, i64> = HashMap::new();
        for node in snap.nodes {
            for e in node.pods.values() {
                for (terms, sign) in [(&pref, 1i64), (&anti, -1i64)] {
                    for w in terms.iter() {
                        let t = &w.pod_affinity_term;
                        if term_matches_pod(
                            t,
                            &pod.namespace,
                            &e.namespace,
                            e.labels(),
                            snap.namespaces,
                        ) {
                            if let Some(tp) = topo_of(node, &t.topology_key) {
                                *m.entry(tp).or_default() += sign * w.weight as i64;
                            }
                        }
                    }
                }
            }
        }
        state.write(SCORE_KEY, ScoreState(m));
        Status::ok()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return 0;
        };
        node.labels()
            .iter()
            .filter_map(|(k, v)| s.0.get(&(k.clone(), v.clone())))
            .sum()
    }
    fn normalize(&self, state: &CycleState, scores: &mut [i64]) {
        if state.read::<ScoreState>(SCORE_KEY).is_none() {
            return;
        }
        let max = scores.iter().copied().max().unwrap_or(0);
        let min = scores.iter().copied().min().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == min {
                0
            } else {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn term(sel: Value, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": sel}, "topologyKey": key})
    }

    fn app(name: &str, labels: Value, affinity: Value) -> PodInfo {
        pod_meta(
            name,
            json!({"labels": labels}),
            json!({"affinity": affinity}),
        )
    }

    fn run(pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<Status> {
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes,
            namespaces: &ns,
        };
        let mut st = CycleState::default();
        InterPodAffinity.pre_filter(&mut st, pod, snap);
        nodes
            .iter()
            .map(|n| InterPodAffinity.filter(&st, pod, n))
            .collect()
    }

    fn zoned(name: &str, zone: &str) -> NodeInfo {
        node(
            name,
            json!({"zone": zone}),
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        )
    }

    #[test]
    fn anti_affinity_one_per_node() {
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(json!({"app": "web"}), "kubernetes.io/hostname")]}});
        let mut nodes = vec![zoned("a", "z1"), zoned("b", "z1")];
        nodes[0].add_pod(Arc::new(app("w1", json!({"app": "web"}), anti.clone())));
        let p = app("w2", json!({"app": "web"}), anti.clone());
        let s = run(&p, &nodes);
        assert_eq!(s[0].reasons, vec![ERR_ANTI_AFFINITY.to_string()]);
        assert!(s[1].is_success());
        // Symmetric: a pod without terms is still kept off by the existing pod's anti-affinity.
        let plain_web = app("w3", json!({"app": "web"}), json!({}));
        let s = run(&plain_web, &nodes);
        assert_eq!(s[0].reasons, vec![ERR_EXISTING_ANTI_AFFINITY.to_string()]);
        assert!(s[1].is_success());
        // Other labels are unaffected.
        assert!(run(&app("x", json!({"app": "db"}), json!({})), &nodes)
            .iter()
            .all(Status::is_success));
        // Zone topology: the whole zone is excluded.
        let zanti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(json!({"app": "web"}), "zone")]}});
        assert!(run(&app("w4", json!({"app": "web"}), zanti), &nodes)
            .iter()
            .all(|s| !s.is_success()));
        // Another namespace does not count.
        let other_ns = pod_meta(
            "w5",
            json!({"namespace": "other", "labels": {"app": "web"}}),
            json!({"affinity": anti}),
        );
        assert!(run(&other_ns, &nodes).iter().all(Status::is_success));
    }

    #[test]
    fn affinity() {
        let aff = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(json!({"app": "db"}), "zone")]}});
        let mut nodes = vec![
            zoned("a", "z1"),
            zoned("b", "z1"),
            zoned("c", "z2"),
            plain("d"),
        ];
        // No db pod anywhere, pod does not match itself: nowhere.
        let p = app("p", json!({"app": "web"}), aff.clone());
        assert!(run(&p, &nodes)
            .iter()
            .all(|s| s.reasons == vec![ERR_AFFINITY.to_string()]));
        // A pod matching its own term may start the group (on nodes with the topology label).
        let selfish = app("p", json!({"app": "db"}), aff.clone());
        let s = run(&selfish, &nodes);
        assert!(s[0].is_success() && s[1].is_success() && s[2].is_success());
        assert!(!s[3].is_success());
        // With a db pod on a: zone z1 (a, b) only.
        nodes[0].add_pod(Arc::new(app("db", json!({"app": "db"}), json!({}))));
        let s = run(&p, &nodes);
        assert!(s[0].is_success() && s[1].is_success());
        assert!(!s[2].is_success() && !s[3].is_success());
        // namespaces / empty namespaceSelector: all namespaces.
        let any_ns = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone", "namespaceSelector": {}}]}});
        let p2 = pod_meta(
            "p2",
            json!({"namespace": "x", "labels": {"app": "web"}}),
            json!({"affinity": any_ns}),
        );
        assert!(run(&p2, &nodes)[0].is_success());
        let named = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone", "namespaces": ["nope"]}]}});
        let p3 = pod_meta(
            "p3",
            json!({"namespace": "x", "labels": {"app": "web"}}),
            json!({"affinity": named}),
        );
        assert!(!run(&p3, &nodes)[0].is_success());
    }

    #[test]
    fn preferred_score() {
        let pref = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": term(json!({"app": "web"}), "kubernetes.io/hostname")}]}});
        let mut nodes = vec![zoned("a", "z1"), zoned("b", "z1")];
        nodes[0].add_pod(Arc::new(app("w1", json!({"app": "web"}), json!({}))));
        let p = app("w2", json!({"app": "web"}), pref);
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespaces: &ns,
        };
        let mut st = CycleState::default();
        assert!(InterPodAffinity
            .pre_score(&mut st, &p, snap, &[])
            .is_success());
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| InterPodAffinity.score(&st, &p, n))
            .collect();
        assert_eq!(s, [-10, 0]);
        InterPodAffinity.normalize(&st, &mut s);
        assert_eq!(s, [0, 100]);
    }
}
