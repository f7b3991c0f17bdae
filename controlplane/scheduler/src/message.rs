//! The "0/N nodes are available: ..." message, worded and sorted as upstream's `FitError`.

use std::collections::BTreeMap;

use crate::framework::{PostFilterResult, Status};

/// Why a pod fits no node.
#[derive(Debug, Clone)]
pub struct FitError {
    /// Nodes in the snapshot.
    pub num_all_nodes: usize,
    /// A pre-filter rejection (replaces the per-node histogram).
    pub pre_filter_msg: Option<String>,
    /// Each evaluated node that failed, with its status.
    pub failed: Vec<(String, Status)>,
    /// What the post-filter (preemption) decided.
    pub post_filter: PostFilterResult,
}

/// `"<count> <reason>"` for every reason, sorted as strings (upstream `sort.Strings`).
pub fn histogram<'a>(statuses: impl IntoIterator<Item = &'a Status>) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        for r in &s.reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut out: Vec<String> = counts
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    out.sort();
    out
}

/// `0/N nodes are available: <histogram>.`
pub fn nodes_available(num_all_nodes: usize, reasons: &[String]) -> String {
    let mut m = format!("0/{num_all_nodes} nodes are available:");
    if !reasons.is_empty() {
        m.push(' ');
        m.push_str(&reasons.join(", "));
        m.push('.');
    }
    m
}

impl FitError {
    /// The user-facing message (PodScheduled condition and FailedScheduling event).
    pub fn message(&self) -> String {
        let mut m = match &self.pre_filter_msg {
            Some(p) => format!("0/{} nodes are available: {p}.", self.num_all_nodes),
            None => nodes_available(
                self.num_all_nodes,
                &histogram(self.failed.iter().map(|(_, s)| s)),
            ),
        };
        if !self.post_filter.message.is_empty() {
            m.push(' ');
            m.push_str(&self.post_filter.message);
        }
        m
    }
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Status;

    fn fe(failed: Vec<Status>, post: &str) -> FitError {
        FitError {
            num_all_nodes: failed.len(),
            pre_filter_msg: None,
            failed: failed
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("n{i}"), s))
                .collect(),
            post_filter: PostFilterResult {
                message: post.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn upstream_examples() {
        let taint = "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }";
        let e = fe(
            vec![
                Status::unschedulable("Insufficient memory"),
                Status::unresolvable(taint),
                Status::unresolvable(taint),
            ],
            "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
        );
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        // Sorted as whole strings, count first: "1 node(s)..." before "2 Insufficient cpu".
        let e = fe(
            vec![
                Status::unschedulable("Insufficient cpu"),
                Status::unresolvable(
                    "node(s) had untolerated taint {machine-check-exception: memory}",
                ),
                Status::unschedulable("Insufficient cpu"),
            ],
            "",
        );
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {machine-check-exception: memory}, 2 Insufficient cpu."
        );
        // One node with two reasons counts both.
        let mut s = Status::unschedulable("Insufficient cpu");
        s.reasons.push("Insufficient memory".into());
        assert_eq!(
            fe(vec![s], "").message(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
        // No nodes at all.
        assert_eq!(fe(vec![], "").message(), "0/0 nodes are available:");
    }

    #[test]
    fn pre_filter_message() {
        let e = FitError {
            num_all_nodes: 2,
            pre_filter_msg: Some("node(s) didn't match Pod's node affinity/selector".into()),
            failed: vec![],
            post_filter: PostFilterResult::default(),
        };
        assert_eq!(
            e.message(),
            "0/2 nodes are available: node(s) didn't match Pod's node affinity/selector."
        );
    }
}
