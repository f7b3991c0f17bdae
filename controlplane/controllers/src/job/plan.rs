//! The Job controller's arithmetic, pure and table-tested: how many pods to create or delete
//! (NonIndexed), which indexes to start or pods to remove (Indexed), the pod re-creation
//! back-off, and the compact `completedIndexes` form.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// First delay before re-creating pods after a failure (upstream `DefaultJobPodFailureBackOff`).
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Largest such delay (upstream `MaxJobPodFailureBackOff`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// NonIndexed: pods to create (positive) or delete (negative), as upstream's `manageJob`.
/// Without `completions` (a work queue) no pod is started once one succeeded.
pub fn active_diff(completions: Option<i32>, parallelism: i32, succeeded: i32, active: i32) -> i32 {
    let parallelism = parallelism.max(0);
    let want = match completions {
        None if succeeded > 0 => active.min(parallelism),
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism),
    };
    want - active
}

/// Indexed: what to do, given the succeeded indexes and the active pods' indexes (in list
/// order; `None` for a pod without a valid index).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexedPlan {
    /// Indexes to start a pod for, lowest first.
    pub create: Vec<i32>,
    /// Positions (in the given active list) of pods to delete.
    pub delete: Vec<usize>,
}

/// Upstream's indexed `manageJob`: pods without a valid index, out of range, for a succeeded
/// index or duplicating an index go; then the lowest pending indexes start, up to
/// `parallelism` active; if more than `parallelism` are active the highest indexes go.
pub fn indexed_plan(
    completions: i32,
    parallelism: i32,
    succeeded: &BTreeSet<i32>,
    active: &[Option<i32>],
) -> IndexedPlan {
    let mut plan = IndexedPlan::default();
    let mut kept: Vec<(i32, usize)> = Vec::new();
    let mut seen = HashSet::new();
    for (pos, idx) in active.iter().enumerate() {
        match idx {
            Some(i)
                if (0..completions).contains(i) && !succeeded.contains(i) && seen.insert(*i) =>
            {
                kept.push((*i, pos));
            }
            _ => plan.delete.push(pos),
        }
    }
    let parallelism = parallelism.max(0) as usize;
    if kept.len() > parallelism {
        kept.sort();
        for (_, pos) in kept.drain(parallelism..) {
            plan.delete.push(pos);
        }
    }
    let room = parallelism - kept.len();
    plan.create = (0..completions)
        .filter(|i| !succeeded.contains(i) && !seen.contains(i))
        .take(room)
        .collect();
    plan.delete.sort_unstable();
    plan
}

/// The delay before pods are re-created after `failures` failures since the last success:
/// none for 0, then 10 s doubling, capped at 6 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16);
    BACKOFF_BASE
        .checked_mul(1 << shift)
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

/// How long creations must still wait at `now` (seconds since the epoch) after the last
/// failure at `last_failure`; `None` when they may go ahead.
pub fn backoff_remaining(failures: u32, last_failure: Option<i64>, now: i64) -> Option<Duration> {
    let delay = backoff_delay(failures);
    let last = last_failure?;
    if delay.is_zero() {
        return None;
    }
    let elapsed = Duration::from_secs(now.saturating_sub(last).max(0) as u64);
    delay.checked_sub(elapsed).filter(|d| !d.is_zero())
}

/// Whether `failed` failures exceed `backoff_limit` (upstream: `failed > backoffLimit`), where
/// `restarts` (container restarts of active pods under `restartPolicy: OnFailure`) count too
/// as upstream's `pastBackoffLimitOnFailure`.
pub fn past_backoff_limit(failed: i32, restarts: i32, backoff_limit: i32) -> bool {
    if failed > backoff_limit {
        return true;
    }
    if restarts > 0 {
        return if backoff_limit == 0 {
            true
        } else {
            failed + restarts >= backoff_limit
        };
    }
    false
}

/// `completedIndexes` in upstream's compact form: `"0-2,4,7-8"`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonindexed_table() {
        // (completions, parallelism, succeeded, active) -> diff
        let cases = [
            (Some(3), 2, 0, 0, 2),
            (Some(3), 2, 0, 2, 0),
            (Some(3), 2, 2, 1, 0),
            (Some(3), 2, 2, 0, 1),
            (Some(3), 2, 3, 0, 0),
            (Some(3), 2, 1, 2, 0),
            (Some(3), 5, 1, 0, 2),
            (Some(3), 1, 0, 3, -2),
            (Some(1), 0, 0, 1, -1),
            (None, 3, 0, 1, 2),
            (None, 3, 1, 2, 0),
            (None, 1, 1, 2, -1),
            (Some(5), 2, 7, 1, -1),
        ];
        for (i, (c, p, s, a, want)) in cases.into_iter().enumerate() {
            assert_eq!(active_diff(c, p, s, a), want, "case {i}");
        }
    }

    #[test]
    fn indexed_table() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        // (completions, parallelism, succeeded, active) -> (create, delete)
        type Case = (
            i32,
            i32,
            BTreeSet<i32>,
            Vec<Option<i32>>,
            Vec<i32>,
            Vec<usize>,
        );
        let cases: Vec<Case> = vec![
            (3, 3, set(&[]), vec![], vec![0, 1, 2], vec![]),
            (5, 2, set(&[]), vec![], vec![0, 1], vec![]),
            (5, 2, set(&[0]), vec![Some(1)], vec![2], vec![]),
            (3, 2, set(&[0, 1]), vec![Some(2)], vec![], vec![]),
            (3, 3, set(&[]), vec![Some(1), Some(1)], vec![0, 2], vec![1]),
            (
                3,
                3,
                set(&[1]),
                vec![Some(1), None, Some(7)],
                vec![0, 2],
                vec![0, 1, 2],
            ),
            (4, 1, set(&[]), vec![Some(3), Some(0)], vec![], vec![0]),
            (3, 3, set(&[0, 1, 2]), vec![], vec![], vec![]),
        ];
        for (i, (c, p, s, a, create, delete)) in cases.into_iter().enumerate() {
            assert_eq!(
                indexed_plan(c, p, &s, &a),
                IndexedPlan { create, delete },
                "case {i}"
            );
        }
    }

    #[test]
    fn backoff_table() {
        let s = Duration::from_secs;
        let cases = [
            (0, s(0)),
            (1, s(10)),
            (2, s(20)),
            (3, s(40)),
            (6, s(320)),
            (7, s(360)),
            (40, s(360)),
        ];
        for (n, want) in cases {
            assert_eq!(backoff_delay(n), want, "failures {n}");
        }
        assert_eq!(backoff_remaining(0, Some(100), 100), None);
        assert_eq!(backoff_remaining(1, None, 100), None);
        assert_eq!(backoff_remaining(1, Some(100), 103), Some(s(7)));
        assert_eq!(backoff_remaining(2, Some(100), 119), Some(s(1)));
        assert_eq!(backoff_remaining(2, Some(100), 120), None);
        assert_eq!(backoff_remaining(1, Some(100), 90), Some(s(10)));
    }

    #[test]
    fn backoff_limit_table() {
        // (failed, restarts, limit) -> past
        let cases = [
            (0, 0, 0, false),
            (1, 0, 0, true),
            (6, 0, 6, false),
            (7, 0, 6, true),
            (0, 1, 0, true),
            (0, 2, 3, false),
            (1, 2, 3, true),
        ];
        for (i, (f, r, l, want)) in cases.into_iter().enumerate() {
            assert_eq!(past_backoff_limit(f, r, l), want, "case {i}");
        }
    }

    #[test]
    fn index_format() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(format_indexes(&set(&[])), "");
        assert_eq!(format_indexes(&set(&[3])), "3");
        assert_eq!(format_indexes(&set(&[0, 1, 2, 4, 7, 8])), "0-2,4,7-8");
    }
}
