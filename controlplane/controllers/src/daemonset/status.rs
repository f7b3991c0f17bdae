//! DaemonSet status as upstream's `updateDaemonSetStatus`: per eligible node whether it has a
//! pod (the oldest counts for ready, available and updated), pods on nodes that should not run
//! them (misscheduled), and observedGeneration only once the controller has acted on that
//! generation.

use k8s_openapi::api::apps::v1::DaemonSetStatus;
use serde_json::{json, Value};

use super::plan::{by_node, NodeView, PodView};

/// The counts of a DaemonSet's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Eligible nodes.
    pub desired: i32,
    /// Eligible nodes with a pod.
    pub current: i32,
    /// Ineligible nodes with a pod.
    pub misscheduled: i32,
    /// Eligible nodes whose oldest pod is ready.
    pub ready: i32,
    /// Eligible nodes whose oldest pod is available.
    pub available: i32,
    /// Eligible nodes whose oldest pod has the current revision.
    pub updated: i32,
}

impl Counts {
    /// `desired − available`.
    pub fn unavailable(&self) -> i32 {
        self.desired - self.available
    }
}

/// Counts over `nodes` and the set's `pods` (terminal pods being deleted left out).
pub fn calculate(nodes: &[NodeView], pods: &[PodView]) -> Counts {
    let grouped = by_node(pods);
    let mut c = Counts::default();
    for n in nodes {
        let first = grouped.get(n.name.as_str()).and_then(|v| v.first());
        if !n.fit.should_run {
            if first.is_some() {
                c.misscheduled += 1;
            }
            continue;
        }
        c.desired += 1;
        let Some(p) = first else {
            continue;
        };
        c.current += 1;
        if p.ready {
            c.ready += 1;
            if p.available {
                c.available += 1;
            }
        }
        if p.updated {
            c.updated += 1;
        }
    }
    c
}

fn zero(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// The status to write: `counts`, the collision count, and `observedGeneration` advanced to
/// `generation` only if `observed` (else kept).
pub fn build(
    old: Option<&DaemonSetStatus>,
    counts: Counts,
    generation: i64,
    observed: bool,
    collision_count: Option<i32>,
) -> DaemonSetStatus {
    DaemonSetStatus {
        current_number_scheduled: counts.current,
        number_misscheduled: counts.misscheduled,
        desired_number_scheduled: counts.desired,
        number_ready: counts.ready,
        updated_number_scheduled: Some(counts.updated),
        number_available: Some(counts.available),
        number_unavailable: Some(counts.unavailable()),
        observed_generation: if observed {
            Some(generation)
        } else {
            old.and_then(|o| o.observed_generation)
        },
        collision_count: collision_count.or_else(|| old.and_then(|o| o.collision_count)),
        conditions: old.and_then(|o| o.conditions.clone()),
    }
}

/// Whether `new` changes a field the controller owns in `old`.
pub fn differs(old: Option<&DaemonSetStatus>, new: &DaemonSetStatus) -> bool {
    let Some(o) = old else {
        return true;
    };
    o.current_number_scheduled != new.current_number_scheduled
        || o.number_misscheduled != new.number_misscheduled
        || o.desired_number_scheduled != new.desired_number_scheduled
        || o.number_ready != new.number_ready
        || zero(o.updated_number_scheduled) != zero(new.updated_number_scheduled)
        || zero(o.number_available) != zero(new.number_available)
        || zero(o.number_unavailable) != zero(new.number_unavailable)
        || o.observed_generation != new.observed_generation
        || o.collision_count != new.collision_count
}

/// The merge patch writing `st` (conditions untouched).
pub fn to_patch(st: &DaemonSetStatus) -> Value {
    json!({"status": {
        "currentNumberScheduled": st.current_number_scheduled,
        "numberMisscheduled": st.number_misscheduled,
        "desiredNumberScheduled": st.desired_number_scheduled,
        "numberReady": st.number_ready,
        "updatedNumberScheduled": zero(st.updated_number_scheduled),
        "numberAvailable": zero(st.number_available),
        "numberUnavailable": zero(st.number_unavailable),
        "observedGeneration": st.observed_generation,
        "collisionCount": st.collision_count,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemonset::eligibility::Fit;

    fn n(name: &str, run: bool) -> NodeView {
        NodeView {
            name: name.into(),
            fit: Fit {
                should_run: run,
                should_continue: run,
            },
        }
    }

    fn p(name: &str, node: &str, t: i64, ready: bool, available: bool, updated: bool) -> PodView {
        PodView {
            name: name.into(),
            node: node.into(),
            scheduled: true,
            created: t,
            failed: false,
            succeeded: false,
            terminating: false,
            ready,
            available,
            updated,
        }
    }

    #[test]
    fn counts_table() {
        let nodes = [n("a", true), n("b", true), n("c", true), n("d", false)];
        let pods = [
            // a: the oldest counts (old and available), the newer updated one does not.
            p("a1", "a", 1, true, true, false),
            p("a2", "a", 5, true, true, true),
            // b: updated, ready, not yet available.
            p("b2", "b", 5, true, false, true),
            // c: none. d: misscheduled. gone: not a node, not counted.
            p("d1", "d", 1, true, true, true),
            p("x", "gone", 1, true, true, true),
        ];
        let c = calculate(&nodes, &pods);
        assert_eq!(
            c,
            Counts {
                desired: 3,
                current: 2,
                misscheduled: 1,
                ready: 2,
                available: 1,
                updated: 1,
            }
        );
        assert_eq!(c.unavailable(), 2);
    }

    #[test]
    fn observed_generation_only_when_acted() {
        let c = Counts {
            desired: 1,
            ..Default::default()
        };
        let first = build(None, c, 3, false, None);
        assert_eq!(first.observed_generation, None);
        let acted = build(Some(&first), c, 3, true, None);
        assert_eq!(acted.observed_generation, Some(3));
        assert_eq!(acted.number_unavailable, Some(1));
        assert!(differs(Some(&first), &acted));
        assert!(!differs(Some(&acted), &acted.clone()));
        let kept = build(Some(&acted), c, 4, false, Some(1));
        assert_eq!(kept.observed_generation, Some(3));
        assert_eq!(to_patch(&kept)["status"]["collisionCount"], 1);
    }
}
