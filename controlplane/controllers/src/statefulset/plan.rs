//! The pure part of upstream's `defaultStatefulSetControl.updateStatefulSet`: given the set's
//! policy and the pods it owns (by ordinal), the pod creations and deletions of one sync.
//! `OrderedReady` stops at the first pod it cannot move past; `Parallel` never waits.

/// What the planner needs to know about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name (`<set>-<ordinal>`).
    pub name: String,
    /// Its ordinal.
    pub ordinal: i32,
    /// Its `controller-revision-hash` label.
    pub revision: String,
    /// Phase Failed or Succeeded: it is deleted and recreated.
    pub finished: bool,
    /// Running with Ready=True.
    pub running_ready: bool,
    /// Ready for `minReadySeconds`.
    pub available: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
}

impl PodView {
    /// Upstream `isHealthy`: running, ready, available and not terminating.
    pub fn healthy(&self) -> bool {
        self.running_ready && self.available && !self.terminating
    }
}

/// `spec.updateStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Replace out-of-date pods from the highest ordinal down to `partition` (an index).
    RollingUpdate {
        /// Pods below this index keep the current revision.
        partition: i32,
        /// At most this many unavailable pods during the update (`None`: one at a time).
        max_unavailable: Option<i32>,
    },
    /// Only pods the user deletes are recreated, with the update revision.
    OnDelete,
}

/// The set as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetView {
    /// `spec.ordinals.start`.
    pub start: i32,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `podManagementPolicy: Parallel`.
    pub parallel: bool,
    /// `spec.updateStrategy`.
    pub strategy: Strategy,
    /// `status.currentRevision` (resolved).
    pub current_revision: String,
    /// The revision of `spec.template`.
    pub update_revision: String,
    /// The set has a deletionTimestamp (nothing is created or deleted).
    pub deleting: bool,
}

/// One action of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of `ordinal` (its claims first) at `revision`.
    Create {
        /// Ordinal.
        ordinal: i32,
        /// Revision name the pod is created at.
        revision: String,
    },
    /// Delete pod `name`.
    Delete {
        /// Pod name.
        name: String,
        /// Why.
        reason: DeleteReason,
    },
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Failed or Succeeded: it is recreated.
    Finished,
    /// Its ordinal is outside `[start, start + replicas)`.
    Condemned,
    /// It is not at the update revision.
    Update,
}

/// The revision a newly created pod of `ordinal` gets (upstream `newVersionedStatefulSetPod`).
pub fn revision_for(set: &SetView, ordinal: i32) -> &str {
    match set.strategy {
        Strategy::RollingUpdate { partition, .. } if ordinal < set.start + partition => {
            &set.current_revision
        }
        _ => &set.update_revision,
    }
}

/// The steps of one sync over the set's pods (any order, unique ordinals expected).
pub fn plan(set: &SetView, pods: &[PodView]) -> Vec<Step> {
    let mut steps = Vec::new();
    if set.deleting {
        return steps;
    }
    let monotonic = !set.parallel;
    let end = set.start + set.replicas.max(0);
    let n = set.replicas.max(0) as usize;
    let mut replicas: Vec<Option<PodView>> = vec![None; n];
    let mut condemned: Vec<&PodView> = Vec::new();
    for p in pods {
        if p.ordinal >= set.start && p.ordinal < end {
            let i = (p.ordinal - set.start) as usize;
            if replicas[i].is_none() {
                replicas[i] = Some(p.clone());
            }
        } else {
            condemned.push(p);
        }
    }
    condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    // The first unhealthy pod: replicas ascending (a missing one counts), then condemned
    // descending. Only it may be deleted while unhealthy in OrderedReady mode.
    let first_unhealthy: Option<i32> = replicas
        .iter()
        .enumerate()
        .find(|(_, p)| !p.as_ref().is_some_and(PodView::healthy))
        .map(|(i, _)| set.start + i as i32)
        .or_else(|| condemned.iter().find(|p| !p.healthy()).map(|p| p.ordinal));

    for (i, slot) in replicas.iter_mut().enumerate() {
        let ordinal = set.start + i as i32;
        match slot {
            Some(p) if p.finished => {
                if !p.terminating {
                    steps.push(Step::Delete {
                        name: p.name.clone(),
                        reason: DeleteReason::Finished,
                    });
                }
                // Recreated on the next sync, once the pod is gone.
                if monotonic {
                    return steps;
                }
            }
            None => {
                let revision = revision_for(set, ordinal).to_string();
                steps.push(Step::Create {
                    ordinal,
                    revision: revision.clone(),
                });
                if monotonic {
                    return steps;
                }
                *slot = Some(PodView {
                    name: String::new(),
                    ordinal,
                    revision,
                    finished: false,
                    running_ready: false,
                    available: false,
                    terminating: false,
                });
            }
            Some(p) => {
                if monotonic && (p.terminating || !p.running_ready || !p.available) {
                    return steps;
                }
            }
        }
    }

    for p in &condemned {
        if p.terminating {
            if monotonic {
                return steps;
            }
            continue;
        }
        if monotonic && !p.healthy() && first_unhealthy != Some(p.ordinal) {
            return steps;
        }
        steps.push(Step::Delete {
            name: p.name.clone(),
            reason: DeleteReason::Condemned,
        });
        if monotonic {
            return steps;
        }
    }

    // In Parallel mode a pod finished this sync is not yet replaced: no update in that case.
    if !monotonic
        && steps.iter().any(|s| {
            matches!(
                s,
                Step::Delete {
                    reason: DeleteReason::Finished,
                    ..
                }
            )
        })
    {
        return steps;
    }

    let Strategy::RollingUpdate {
        partition,
        max_unavailable,
    } = set.strategy
    else {
        return steps;
    };
    let replicas: Vec<PodView> = replicas.into_iter().flatten().collect();
    let update_min = partition.max(0) as usize;
    match max_unavailable {
        None => {
            for target in (update_min..replicas.len()).rev() {
                let p = &replicas[target];
                if p.revision != set.update_revision && !p.terminating {
                    steps.push(Step::Delete {
                        name: p.name.clone(),
                        reason: DeleteReason::Update,
                    });
                    return steps;
                }
                if !p.healthy() {
                    return steps;
                }
            }
        }
        Some(max) => {
            let max = max.max(1) as usize;
            let unavailable = replicas.iter().filter(|p| !p.healthy()).count();
            if unavailable >= max {
                return steps;
            }
            let mut to_delete = max - unavailable;
            for target in (update_min..replicas.len()).rev() {
                if to_delete == 0 {
                    break;
                }
                let p = &replicas[target];
                if p.revision != set.update_revision && !p.terminating {
                    steps.push(Step::Delete {
                        name: p.name.clone(),
                        reason: DeleteReason::Update,
                    });
                    to_delete -= 1;
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "web-old";
    const NEW: &str = "web-new";

    /// `h` healthy at NEW, `o` healthy at OLD, `p` pending (not ready), `f` failed,
    /// `t` terminating, `-` missing.
    fn pods(spec: &str, start: i32) -> Vec<PodView> {
        spec.chars()
            .enumerate()
            .filter(|(_, c)| *c != '-')
            .map(|(i, c)| {
                let ordinal = start + i as i32;
                let ready = matches!(c, 'h' | 'o');
                PodView {
                    name: format!("web-{ordinal}"),
                    ordinal,
                    revision: if c == 'o' { OLD } else { NEW }.to_string(),
                    finished: c == 'f',
                    running_ready: ready,
                    available: ready,
                    terminating: c == 't',
                }
            })
            .collect()
    }

    fn set(replicas: i32, parallel: bool, strategy: Strategy) -> SetView {
        SetView {
            start: 0,
            replicas,
            parallel,
            strategy,
            current_revision: OLD.into(),
            update_revision: NEW.into(),
            deleting: false,
        }
    }

    const RU: Strategy = Strategy::RollingUpdate {
        partition: 0,
        max_unavailable: None,
    };

    fn c(ordinal: i32) -> Step {
        Step::Create {
            ordinal,
            revision: NEW.into(),
        }
    }
    fn d(ordinal: i32, reason: DeleteReason) -> Step {
        Step::Delete {
            name: format!("web-{ordinal}"),
            reason,
        }
    }
    use DeleteReason::{Condemned, Finished, Update};

    #[test]
    fn ordered_ready_table() {
        let cases: Vec<(&str, i32, Vec<Step>)> = vec![
            ("", 3, vec![c(0)]),
            ("p", 3, vec![]),
            ("h", 3, vec![c(1)]),
            ("hp", 3, vec![]),
            ("hh", 3, vec![c(2)]),
            ("hhh", 3, vec![]),
            // A gap is filled first, even above existing pods.
            ("h-h", 3, vec![c(1)]),
            // Failed pods are deleted, then recreated on a later sync.
            ("hf", 3, vec![d(1, Finished)]),
            ("hfh", 3, vec![d(1, Finished)]),
            // Terminating pods are waited for.
            ("ht", 3, vec![]),
            // Scale down from the highest ordinal, one at a time, only when the rest is healthy.
            ("hhh", 1, vec![d(2, Condemned)]),
            ("hht", 1, vec![]),
            ("hh", 1, vec![d(1, Condemned)]),
            // A healthy higher pod goes before an unhealthy lower one.
            ("hph", 1, vec![d(2, Condemned)]),
            ("phh", 1, vec![]),
            // The first unhealthy pod may go even though it is unhealthy.
            ("hhp", 2, vec![d(2, Condemned)]),
            ("hpp", 1, vec![d(2, Condemned)]),
            ("hhp", 1, vec![d(2, Condemned)]),
            ("hph", 2, vec![]),
            ("", 0, vec![]),
        ];
        for (spec, replicas, want) in cases {
            assert_eq!(
                plan(&set(replicas, false, RU), &pods(spec, 0)),
                want,
                "{spec} -> {replicas}"
            );
        }
    }

    #[test]
    fn parallel_table() {
        let cases: Vec<(&str, i32, Vec<Step>)> = vec![
            ("", 3, vec![c(0), c(1), c(2)]),
            ("p-p", 3, vec![c(1)]),
            ("hfh", 3, vec![d(1, Finished)]),
            ("pppp", 2, vec![d(3, Condemned), d(2, Condemned)]),
            ("pptp", 2, vec![d(3, Condemned)]),
        ];
        for (spec, replicas, want) in cases {
            assert_eq!(
                plan(&set(replicas, true, RU), &pods(spec, 0)),
                want,
                "{spec} -> {replicas}"
            );
        }
    }

    #[test]
    fn rolling_update_table() {
        let part = |partition| Strategy::RollingUpdate {
            partition,
            max_unavailable: None,
        };
        let cases: Vec<(&str, Strategy, Vec<Step>)> = vec![
            // Highest ordinal first, one at a time, waiting for the replacement.
            ("ooo", RU, vec![d(2, Update)]),
            ("oo-", RU, vec![c(2)]),
            ("oop", RU, vec![]),
            ("ooh", RU, vec![d(1, Update)]),
            ("ohh", RU, vec![d(0, Update)]),
            ("hhh", RU, vec![]),
            // The partition: indexes below it keep their revision.
            ("ooo", part(2), vec![d(2, Update)]),
            ("ooh", part(2), vec![]),
            ("ooo", part(3), vec![]),
            ("ooo", part(5), vec![]),
            // OnDelete never deletes for an update.
            ("ooo", Strategy::OnDelete, vec![]),
            // maxUnavailable 2: two at a time, counting unavailable pods.
            (
                "oooo",
                Strategy::RollingUpdate {
                    partition: 0,
                    max_unavailable: Some(2),
                },
                vec![d(3, Update), d(2, Update)],
            ),
        ];
        for (spec, strategy, want) in cases {
            assert_eq!(
                plan(
                    &set(3.max(spec.len() as i32), false, strategy),
                    &pods(spec, 0)
                ),
                want,
                "{spec} {strategy:?}"
            );
        }
        // With maxUnavailable, a pending replacement counts as unavailable.
        let s = set(
            4,
            false,
            Strategy::RollingUpdate {
                partition: 0,
                max_unavailable: Some(2),
            },
        );
        assert_eq!(plan(&s, &pods("ooph", 0)), vec![]);
        assert_eq!(plan(&s, &pods("oohh", 0)), vec![d(1, Update), d(0, Update)]);
    }

    #[test]
    fn new_pods_below_partition_get_the_current_revision() {
        let s = set(
            3,
            false,
            Strategy::RollingUpdate {
                partition: 2,
                max_unavailable: None,
            },
        );
        assert_eq!(revision_for(&s, 1), OLD);
        assert_eq!(revision_for(&s, 2), NEW);
        assert_eq!(
            plan(&s, &pods("h", 0)),
            vec![Step::Create {
                ordinal: 1,
                revision: OLD.into()
            }]
        );
        let od = set(3, false, Strategy::OnDelete);
        assert_eq!(revision_for(&od, 0), NEW);
    }

    #[test]
    fn ordinals_start_and_deleting_set() {
        let mut s = set(2, false, RU);
        s.start = 5;
        assert_eq!(plan(&s, &pods("", 5)), vec![c(5)]);
        // A pod below the start is condemned.
        let mut p = pods("hh", 5);
        p.extend(pods("h", 4));
        assert_eq!(plan(&s, &p), vec![d(4, Condemned)]);
        s.deleting = true;
        assert_eq!(plan(&s, &pods("", 5)), vec![]);
    }
}
