//! The pure decisions of a DaemonSet sync: upstream's `manage` (`podsShouldBeOnNode`: a pod
//! for every node that should run one, failed and succeeded pods replaced, extra pods on a node
//! deleted keeping the oldest — or, with surge, one old and one new —, pods on nodes that must
//! not run them deleted) and `rollingUpdate` (maxUnavailable deletes old pods for the manage
//! loop to replace; maxSurge creates the new pod first and deletes the old once the new one is
//! available).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::eligibility::Fit;
use crate::deployment::util::{scaled_value, IntOrPercentError};

/// What the planner knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Whether daemon pods should (continue to) run there.
    pub fit: Fit,
}

/// What the planner knows of a daemon pod (terminal pods being deleted are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// The node it is bound or pinned to.
    pub node: String,
    /// Bound (`spec.nodeName` set).
    pub scheduled: bool,
    /// Creation time, seconds.
    pub created: i64,
    /// Phase Failed.
    pub failed: bool,
    /// Phase Succeeded.
    pub succeeded: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// Ready condition True.
    pub ready: bool,
    /// Ready for `minReadySeconds`.
    pub available: bool,
    /// Carries the current `controller-revision-hash`.
    pub updated: bool,
}

/// Pod changes one step asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Nodes that get a new pod.
    pub create_on: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// Failed pods `(pod, node)` to delete unless their node is in failure back-off.
    pub failed: Vec<(String, String)>,
}

impl Changes {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.create_on.is_empty() && self.delete.is_empty() && self.failed.is_empty()
    }
}

/// Upstream `podByCreationTimestampAndPhase`: bound pods first, then oldest, then by name.
pub fn oldest_first(a: &PodView, b: &PodView) -> std::cmp::Ordering {
    b.scheduled
        .cmp(&a.scheduled)
        .then(a.created.cmp(&b.created))
        .then_with(|| a.name.cmp(&b.name))
}

/// Pods grouped by target node, each group oldest first.
pub fn by_node(pods: &[PodView]) -> BTreeMap<&str, Vec<&PodView>> {
    let mut m: BTreeMap<&str, Vec<&PodView>> = BTreeMap::new();
    for p in pods {
        m.entry(p.node.as_str()).or_default().push(p);
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| oldest_first(a, b));
    }
    m
}

/// Upstream `podsShouldBeOnNode` for one node, added to `out`.
fn on_node(node: &NodeView, pods: Option<&Vec<&PodView>>, surge: bool, out: &mut Changes) {
    let Fit {
        should_run,
        should_continue,
    } = node.fit;
    match pods {
        None if should_run => out.create_on.push(node.name.clone()),
        None => {}
        Some(pods) if should_continue => {
            let mut running: Vec<&PodView> = Vec::new();
            for p in pods.iter().filter(|p| !p.terminating) {
                if p.failed {
                    out.failed.push((p.name.clone(), node.name.clone()));
                } else if p.succeeded {
                    out.delete.push(p.name.clone());
                } else {
                    running.push(p);
                }
            }
            if running.len() <= 1 {
                return;
            }
            if !surge {
                out.delete
                    .extend(running[1..].iter().map(|p| p.name.clone()));
                return;
            }
            // With surge: keep the oldest new pod and the oldest old pod; the old one goes if
            // it is not ready or the new one is available.
            let (mut new, mut old): (Option<&PodView>, Option<&PodView>) = (None, None);
            for p in running {
                let slot = if p.updated { &mut new } else { &mut old };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    out.delete.push(p.name.clone());
                }
            }
            if let (Some(n), Some(o)) = (new, old) {
                if !o.ready || n.available {
                    out.delete.push(o.name.clone());
                }
            }
        }
        Some(pods) => out.delete.extend(
            pods.iter()
                .filter(|p| !p.terminating)
                .map(|p| p.name.clone()),
        ),
    }
}

/// Upstream `manage`: the creations and deletions that give every eligible node one pod.
/// Pods targeting a node that no longer exists are deleted too (upstream leaves bound ones
/// to the pod garbage collector, which kennel does not have).
pub fn manage(nodes: &[NodeView], pods: &[PodView], surge: bool) -> Changes {
    let grouped = by_node(pods);
    let mut out = Changes::default();
    for n in nodes {
        on_node(n, grouped.get(n.name.as_str()), surge, &mut out);
    }
    for (node, pods) in &grouped {
        if !nodes.iter().any(|n| n.name == *node) {
            out.delete.extend(
                pods.iter()
                    .filter(|p| !p.terminating)
                    .map(|p| p.name.clone()),
            );
        }
    }
    out
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate over `desired` nodes (upstream
/// `updatedDesiredNodeCounts`: both rounded up; both 0 means unavailable 1).
pub fn fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), IntOrPercentError> {
    let scale = |v: Option<&IntOrString>| v.map_or(Ok(0), |v| scaled_value(v, desired, true));
    let surge = scale(max_surge)?.max(0);
    let mut unavailable = scale(max_unavailable)?.max(0);
    if desired > 0 && surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// Upstream `findUpdatedPodsOnNode`: the node's one new and one old live pod; `None` if it
/// has two of either (the manage loop cleans that up first).
fn updated_and_old<'a>(pods: &[&'a PodView]) -> Option<(Option<&'a PodView>, Option<&'a PodView>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !p.terminating) {
        let slot = if p.updated { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(*p);
    }
    Some((new, old))
}

/// Upstream `rollingUpdate` (runs only when the manage step changed nothing).
pub fn rolling_update(
    nodes: &[NodeView],
    pods: &[PodView],
    max_surge: i32,
    max_unavailable: i32,
) -> Changes {
    let grouped = by_node(pods);
    let empty = Vec::new();
    // Nodes with pods, plus eligible nodes without any.
    let mut names: Vec<&str> = grouped.keys().copied().collect();
    for n in nodes.iter().filter(|n| n.fit.should_run) {
        if !grouped.contains_key(n.name.as_str()) {
            names.push(&n.name);
        }
    }
    names.sort_unstable();
    let desired = nodes.iter().filter(|n| n.fit.should_run).count() as i32;
    let should_run = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .is_some_and(|n| n.fit.should_run)
    };
    let mut out = Changes::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace: Vec<String> = Vec::new();
        let mut candidates: Vec<String> = Vec::new();
        for name in &names {
            let pods = grouped.get(name).unwrap_or(&empty);
            match updated_and_old(pods) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !new.available {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !old.available {
                        // Unavailable anyway: replace it, and count it.
                        replace.push(old.name.clone());
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(old.name.clone());
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        out.delete = replace;
        out.delete.extend(candidates.into_iter().take(room));
        return out;
    }
    let mut surged = 0;
    let mut available = 0;
    let mut allowed_new: Vec<String> = Vec::new();
    let mut candidate_new: Vec<String> = Vec::new();
    let mut not_run_old: Vec<String> = Vec::new();
    for name in &names {
        let pods = grouped.get(name).unwrap_or(&empty);
        let Some((new, old)) = updated_and_old(pods) else {
            surged += 1;
            continue;
        };
        if old.or(new).is_some_and(|p| p.available) {
            available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !old.available => {
                if should_run(name) {
                    allowed_new.push(name.to_string());
                } else {
                    out.delete.push(old.name.clone());
                }
            }
            (None, Some(old)) => {
                if !should_run(name) {
                    not_run_old.push(old.name.clone());
                } else if surged < max_surge {
                    candidate_new.push(name.to_string());
                }
            }
            (Some(new), Some(old)) => {
                if new.available {
                    out.delete.push(old.name.clone());
                } else {
                    surged += 1;
                }
            }
        }
    }
    // Old available pods on nodes that should no longer run them go only while enough others
    // are available (with surge the owner expects full availability).
    let deletable = (available - desired).clamp(0, not_run_old.len() as i32) as usize;
    out.delete.extend(not_run_old.into_iter().take(deletable));
    let room = (max_surge - surged).clamp(0, candidate_new.len() as i32) as usize;
    out.create_on = allowed_new;
    out.create_on.extend(candidate_new.into_iter().take(room));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, run: bool, cont: bool) -> NodeView {
        NodeView {
            name: name.into(),
            fit: Fit {
                should_run: run,
                should_continue: cont,
            },
        }
    }

    /// A live pod `name` on `node` created at `t`; flags in `f`: u updated, r ready (and
    /// available), R ready but not yet available, F failed, S succeeded, T terminating,
    /// p pending (unbound).
    fn p(name: &str, node: &str, t: i64, f: &str) -> PodView {
        PodView {
            name: name.into(),
            node: node.into(),
            scheduled: !f.contains('p'),
            created: t,
            failed: f.contains('F'),
            succeeded: f.contains('S'),
            terminating: f.contains('T'),
            ready: f.contains('r') || f.contains('R'),
            available: f.contains('r'),
            updated: f.contains('u'),
        }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn manage_table() {
        let three = [n("a", true, true), n("b", true, true), n("c", true, true)];
        type Case = (
            &'static str,
            Vec<NodeView>,
            Vec<PodView>,
            bool,
            Vec<&'static str>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "one per node",
                three.to_vec(),
                vec![],
                false,
                vec!["a", "b", "c"],
                vec![],
                vec![],
            ),
            (
                "only missing nodes",
                three.to_vec(),
                vec![p("x", "a", 1, "ur"), p("y", "c", 1, "ur")],
                false,
                vec!["b"],
                vec![],
                vec![],
            ),
            (
                "extra pods: keep the oldest",
                three[..1].to_vec(),
                vec![
                    p("new", "a", 5, "ur"),
                    p("old", "a", 1, "ur"),
                    p("mid", "a", 3, "ur"),
                ],
                false,
                vec![],
                vec!["mid", "new"],
                vec![],
            ),
            (
                "bound before unbound",
                three[..1].to_vec(),
                vec![p("unbound", "a", 1, "pu"), p("bound", "a", 5, "ur")],
                false,
                vec![],
                vec!["unbound"],
                vec![],
            ),
            (
                "failed pod replaced, succeeded deleted, terminating ignored",
                three.to_vec(),
                vec![
                    p("f", "a", 1, "F"),
                    p("s", "b", 1, "S"),
                    p("t", "c", 1, "T"),
                ],
                false,
                vec![],
                vec!["s"],
                vec!["f"],
            ),
            (
                "not eligible: delete",
                vec![n("a", false, false)],
                vec![p("x", "a", 1, "ur"), p("t", "a", 1, "T")],
                false,
                vec![],
                vec!["x"],
                vec![],
            ),
            (
                "NoSchedule taint: keep, create nothing",
                vec![n("a", false, true), n("b", false, true)],
                vec![p("x", "a", 1, "ur")],
                false,
                vec![],
                vec![],
                vec![],
            ),
            (
                "node gone: delete its pods",
                three[..1].to_vec(),
                vec![p("x", "a", 1, "ur"), p("gone", "z", 1, "ur")],
                false,
                vec![],
                vec!["gone"],
                vec![],
            ),
            (
                "surge: old ready, new not available: keep both",
                three[..1].to_vec(),
                vec![p("old", "a", 1, "r"), p("new", "a", 5, "uR")],
                true,
                vec![],
                vec![],
                vec![],
            ),
            (
                "surge: new available: old goes",
                three[..1].to_vec(),
                vec![p("old", "a", 1, "r"), p("new", "a", 5, "ur")],
                true,
                vec![],
                vec!["old"],
                vec![],
            ),
            (
                "surge: old not ready goes, extra new goes",
                three[..1].to_vec(),
                vec![
                    p("old", "a", 1, ""),
                    p("new", "a", 5, "u"),
                    p("new2", "a", 6, "u"),
                ],
                true,
                vec![],
                vec!["new2", "old"],
                vec![],
            ),
        ];
        for (what, nodes, pods, surge, create, delete, failed) in cases {
            let got = manage(&nodes, &pods, surge);
            assert_eq!(got.create_on, create, "{what}: create");
            assert_eq!(sorted(got.delete), delete, "{what}: delete");
            let f: Vec<&str> = got.failed.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(f, failed, "{what}: failed");
        }
    }

    #[test]
    fn fencepost_table() {
        let i = IntOrString::Int;
        let s = |v: &str| IntOrString::String(v.into());
        let cases = [
            (Some(i(0)), Some(i(1)), 3, Ok((0, 1))),
            (Some(i(0)), Some(i(0)), 3, Ok((0, 1))),
            (Some(i(0)), Some(i(0)), 0, Ok((0, 0))),
            (Some(s("10%")), Some(i(0)), 3, Ok((1, 0))),
            (Some(i(0)), Some(s("50%")), 3, Ok((0, 2))),
            (None, None, 5, Ok((0, 1))),
        ];
        for (surge, unav, desired, want) in cases {
            assert_eq!(
                fenceposts(surge.as_ref(), unav.as_ref(), desired),
                want,
                "{surge:?} {unav:?} of {desired}"
            );
        }
        assert!(fenceposts(None, Some(&s("x")), 3).is_err());
    }

    #[test]
    fn rolling_max_unavailable_table() {
        let three = [n("a", true, true), n("b", true, true), n("c", true, true)];
        let cases: Vec<(&str, Vec<PodView>, i32, Vec<&str>)> = vec![
            (
                "all old: delete one",
                vec![
                    p("a1", "a", 1, "r"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec!["a1"],
            ),
            (
                "one replaced but not available: wait",
                vec![
                    p("a2", "a", 5, "uR"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec![],
            ),
            (
                "one node empty (being replaced): wait",
                vec![p("b1", "b", 1, "r"), p("c1", "c", 1, "r")],
                1,
                vec![],
            ),
            (
                "replacement available: next",
                vec![
                    p("a2", "a", 5, "ur"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec!["b1"],
            ),
            (
                "unavailable old pods are always replaced",
                vec![
                    p("a1", "a", 1, ""),
                    p("b1", "b", 1, ""),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec!["a1", "b1"],
            ),
            (
                "maxUnavailable 2",
                vec![
                    p("a1", "a", 1, "r"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                2,
                vec!["a1", "b1"],
            ),
            (
                "done",
                vec![
                    p("a2", "a", 5, "ur"),
                    p("b2", "b", 5, "ur"),
                    p("c2", "c", 5, "ur"),
                ],
                1,
                vec![],
            ),
        ];
        for (what, pods, mu, want) in cases {
            let got = rolling_update(&three, &pods, 0, mu);
            assert!(got.create_on.is_empty(), "{what}");
            assert_eq!(sorted(got.delete), want, "{what}");
        }
    }

    #[test]
    fn rolling_max_surge_table() {
        let three = [n("a", true, true), n("b", true, true), n("c", true, true)];
        type Case = (
            &'static str,
            Vec<NodeView>,
            Vec<PodView>,
            i32,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "surge one: new pod first",
                three.to_vec(),
                vec![
                    p("a1", "a", 1, "r"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec!["a"],
                vec![],
            ),
            (
                "surged pod not available: wait",
                three.to_vec(),
                vec![
                    p("a1", "a", 1, "r"),
                    p("a2", "a", 5, "uR"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec![],
                vec![],
            ),
            (
                "surged pod available: delete the old, surge the next",
                three.to_vec(),
                vec![
                    p("a1", "a", 1, "r"),
                    p("a2", "a", 5, "ur"),
                    p("b1", "b", 1, "r"),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec!["b"],
                vec!["a1"],
            ),
            (
                "unavailable old pods get a new pod regardless of surge",
                three.to_vec(),
                vec![
                    p("a1", "a", 1, ""),
                    p("b1", "b", 1, ""),
                    p("c1", "c", 1, "r"),
                ],
                1,
                vec!["a", "b", "c"],
                vec![],
            ),
            (
                "old pod on a node that should not run it waits for availability elsewhere",
                vec![n("a", false, true), n("b", true, true)],
                vec![p("a1", "a", 1, "r"), p("b2", "b", 5, "uR")],
                1,
                vec![],
                vec![],
            ),
            (
                "... and goes once enough are available",
                vec![n("a", false, true), n("b", true, true)],
                vec![p("a1", "a", 1, "r"), p("b2", "b", 5, "ur")],
                1,
                vec![],
                vec!["a1"],
            ),
        ];
        for (what, nodes, pods, ms, create, delete) in cases {
            let got = rolling_update(&nodes, &pods, ms, 0);
            assert_eq!(got.create_on, create, "{what}: create");
            assert_eq!(sorted(got.delete), delete, "{what}: delete");
        }
    }
}
