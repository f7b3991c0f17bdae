//! The scheduling framework: plugin traits at upstream's extension points, the per-cycle state,
//! statuses, and a [`Profile`] that runs one scheduling cycle (pre-filter, filter over a rotating
//! sample of nodes, post-filter, pre-score, score, normalise, weight, pick).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;

use crate::message::FitError;
pub use crate::nodeinfo::{NodeInfo, PodInfo};

/// Highest score a plugin may give after normalisation.
pub const MAX_NODE_SCORE: i64 = 100;

/// The outcome class of a plugin call, as upstream's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The node passes / the step succeeded.
    Success,
    /// The node does not fit now; preemption might help.
    Unschedulable,
    /// The node does not fit and preemption cannot help.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod (its later calls are skipped).
    Skip,
    /// An internal error.
    Error,
}

/// A plugin's answer: a code and the reasons shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Code.
    pub code: Code,
    /// Reasons (each is counted separately in the "0/N nodes are available" message).
    pub reasons: Vec<String>,
}

impl Status {
    /// Success.
    pub fn ok() -> Self {
        Self {
            code: Code::Success,
            reasons: Vec::new(),
        }
    }
    /// Skip.
    pub fn skip() -> Self {
        Self {
            code: Code::Skip,
            reasons: Vec::new(),
        }
    }
    /// Unschedulable with one reason.
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Self {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
        }
    }
    /// UnschedulableAndUnresolvable with one reason.
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Self {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
        }
    }
    /// Whether this is success.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// Data plugins keep between their calls within one cycle, keyed by plugin name.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn Any + Send + Sync>>,
    skip_score: Vec<&'static str>,
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("skip_score", &self.skip_score)
            .finish()
    }
}

impl CycleState {
    /// Stores `v` under `key`.
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, v: T) {
        self.data.insert(key, Box::new(v));
    }
    /// Reads the value under `key`.
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key).and_then(|b| b.downcast_ref())
    }
}

/// The cluster as a cycle sees it.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// Every node, in the cache's order.
    pub nodes: &'a [NodeInfo],
    /// Namespace labels (for `namespaceSelector`).
    pub namespaces: &'a HashMap<String, BTreeMap<String, String>>,
}

/// Runs before filtering; may precompute state or reject the pod outright.
pub trait PreFilterPlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Precomputes `state`; a non-success status rejects the pod on every node.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: Snapshot<'_>) -> Status;
}

/// Decides whether the pod may run on one node.
pub trait FilterPlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Whether `pod` fits `node`.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// What a post-filter plugin decided for a pod that fits nowhere.
#[derive(Debug, Clone, Default)]
pub struct PostFilterResult {
    /// The node the pod is nominated to (after preemption).
    pub nominated_node: Option<String>,
    /// Pods to evict for it.
    pub victims: Vec<Arc<PodInfo>>,
    /// The message appended to the failure (e.g. `preemption: 0/3 nodes are available: ...`).
    pub message: String,
}

/// Runs when no node fits (preemption).
pub trait PostFilterPlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Decides what to do with `pod`, given why each node failed.
    fn post_filter(
        &self,
        profile: &Profile,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        failed: &[(usize, Status)],
    ) -> PostFilterResult;
}

/// Runs once before scoring with the feasible nodes.
pub trait PreScorePlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Precomputes `state`; `Skip` disables the matching score plugin for this cycle.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        feasible: &[&NodeInfo],
    ) -> Status;
}

/// Ranks feasible nodes.
pub trait ScorePlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Raw score of `node`.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps raw scores to 0..=100 (default: they already are).
    fn normalize(&self, _state: &CycleState, _scores: &mut [i64]) {}
}

/// Reserves resources for a decided pod (the cache's assume is the built-in reserve).
pub trait ReservePlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Reserves.
    fn reserve(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
    /// Undoes [`ReservePlugin::reserve`] when the pod is not bound after all.
    fn unreserve(&self, state: &CycleState, pod: &PodInfo, node: &str);
}

/// Approves, rejects or delays binding.
pub trait PermitPlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Whether binding may go ahead.
    fn permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Why a binding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindFailure {
    /// The pod is already bound (409): someone else bound it; not retried.
    AlreadyBound(String),
    /// The pod is gone (404) or being deleted: not retried.
    Gone(String),
    /// Anything else: the pod goes back to the queue with backoff.
    Other(String),
}

/// Work right before binding (e.g. volumes).
pub trait PreBindPlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Runs before bind, with the state of the cycle that chose `node`.
    fn pre_bind(
        &self,
        state: Arc<CycleState>,
        pod: Arc<Pod>,
        node: String,
    ) -> BoxFuture<'static, Result<(), BindFailure>>;
}

/// Writes the decision to the API.
pub trait BindPlugin: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// Binds `pod` to `node`.
    fn bind(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Result<(), BindFailure>>;
}

/// A weighted score plugin.
#[derive(Clone)]
pub struct WeightedScore {
    /// The plugin.
    pub plugin: Arc<dyn ScorePlugin>,
    /// Its weight.
    pub weight: i64,
}

/// A scheduler profile: the plugins run for pods whose `spec.schedulerName` is `scheduler_name`.
#[derive(Clone, Default)]
pub struct Profile {
    /// `spec.schedulerName` served.
    pub scheduler_name: String,
    /// PreFilter plugins.
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    /// Filter plugins, in order (the first failure decides a node's reason).
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    /// PostFilter plugins.
    pub post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    /// PreScore plugins.
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    /// Score plugins with weights.
    pub score: Vec<WeightedScore>,
    /// Reserve plugins.
    pub reserve: Vec<Arc<dyn ReservePlugin>>,
    /// Permit plugins.
    pub permit: Vec<Arc<dyn PermitPlugin>>,
    /// PreBind plugins.
    pub pre_bind: Vec<Arc<dyn PreBindPlugin>>,
    /// Bind plugins (the first one binds).
    pub bind: Vec<Arc<dyn BindPlugin>>,
    /// Percentage of nodes to score; 0 means upstream's adaptive default.
    pub percentage_of_nodes_to_score: u32,
}

/// Upstream's minimum number of feasible nodes to find.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream's minimum adaptive percentage.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// How many feasible nodes to look for among `all` (upstream `numFeasibleNodesToFind`).
pub fn num_feasible_nodes_to_find(all: usize, percentage: u32) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let mut pct = percentage as usize;
    if pct == 0 {
        pct = 50usize
            .saturating_sub(all / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    if pct >= 100 {
        return all;
    }
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The decision of one cycle.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Chosen node.
    pub node: String,
    /// Nodes evaluated by filters.
    pub evaluated: usize,
    /// Feasible nodes found.
    pub feasible: usize,
    /// The cycle's state (read by reserve, unreserve and pre-bind).
    pub state: Arc<CycleState>,
}

/// Mutable per-scheduler iteration state: the rotating start index and a tie-break generator.
#[derive(Debug, Clone)]
pub struct Rotor {
    /// Where the next filter pass starts.
    pub next_start: usize,
    rng: u64,
}

impl Default for Rotor {
    fn default() -> Self {
        Self {
            next_start: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Rotor {
    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Profile {
    /// Runs the filter plugins for one node.
    pub fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for f in &self.filter {
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s;
            }
        }
        Status::ok()
    }

    /// Runs the Reserve plugins in order; on the first failure every Reserve plugin is undone
    /// (as upstream) and the error is `running Reserve plugin "<name>": <reasons>`.
    pub fn run_reserve(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Result<(), String> {
        for p in &self.reserve {
            let s = p.reserve(state, pod, node);
            if !s.is_success() && s.code != Code::Skip {
                self.run_unreserve(state, pod, node);
                return Err(format!(
                    "running Reserve plugin {:?}: {}",
                    p.name(),
                    s.reasons.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Undoes every Reserve plugin, in reverse order (the pod will not be bound to `node`).
    pub fn run_unreserve(&self, state: &CycleState, pod: &PodInfo, node: &str) {
        for p in self.reserve.iter().rev() {
            p.unreserve(state, pod, node);
        }
    }

    /// Runs the pre-filter plugins into a fresh state.
    pub fn run_pre_filters(&self, pod: &PodInfo, snap: Snapshot<'_>) -> (CycleState, Status) {
        let mut state = CycleState::default();
        for p in &self.pre_filter {
            let s = p.pre_filter(&mut state, pod, snap);
            if !s.is_success() && s.code != Code::Skip {
                return (state, s);
            }
        }
        (state, Status::ok())
    }

    /// Runs the post-filter plugins until one nominates a node.
    fn run_post_filters(
        &self,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        failed: &[(usize, Status)],
    ) -> PostFilterResult {
        let mut post = PostFilterResult::default();
        for p in &self.post_filter {
            post = p.post_filter(self, pod, snap, failed);
            if post.nominated_node.is_some() {
                break;
            }
        }
        post
    }

    /// One scheduling cycle for `pod` over `snap`: the chosen node or why none fits (with the
    /// post-filter's result, e.g. preemption victims).
    pub fn schedule(
        &self,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        rotor: &mut Rotor,
    ) -> Result<Decision, Box<FitError>> {
        let n = snap.nodes.len();
        let (mut state, pre) = self.run_pre_filters(pod, snap);
        if !pre.is_success() {
            // As upstream: every node failed with the pre-filter's status, and post-filter
            // (preemption) still runs on that.
            let failed: Vec<(usize, Status)> = (0..n).map(|i| (i, pre.clone())).collect();
            let post = self.run_post_filters(pod, snap, &failed);
            return Err(Box::new(FitError {
                num_all_nodes: n,
                pre_filter_msg: Some(pre.reasons.join(", ")),
                failed: Vec::new(),
                post_filter: post,
            }));
        }
        let want = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score);
        let mut feasible: Vec<usize> = Vec::with_capacity(want.min(n));
        let mut failed: Vec<(usize, Status)> = Vec::new();
        let start = if n == 0 { 0 } else { rotor.next_start % n };
        let mut processed = 0;
        while processed < n && feasible.len() < want {
            let i = (start + processed) % n;
            processed += 1;
            let s = self.run_filters(&state, pod, &snap.nodes[i]);
            if s.is_success() {
                feasible.push(i);
            } else {
                failed.push((i, s));
            }
        }
        if n > 0 {
            rotor.next_start = (start + processed) % n;
        }
        if feasible.is_empty() {
            let post = self.run_post_filters(pod, snap, &failed);
            return Err(Box::new(FitError {
                num_all_nodes: n,
                pre_filter_msg: None,
                failed: failed
                    .into_iter()
                    .map(|(i, s)| (snap.nodes[i].name.clone(), s))
                    .collect(),
                post_filter: post,
            }));
        }
        let evaluated = processed;
        if feasible.len() == 1 {
            return Ok(Decision {
                node: snap.nodes[feasible[0]].name.clone(),
                evaluated,
                feasible: 1,
                state: Arc::new(state),
            });
        }
        let infos: Vec<&NodeInfo> = feasible.iter().map(|&i| &snap.nodes[i]).collect();
        for p in &self.pre_score {
            let s = p.pre_score(&mut state, pod, snap, &infos);
            if s.code == Code::Skip {
                state.skip_score.push(p.name());
            }
        }
        let mut total = vec![0i64; infos.len()];
        let mut scores = vec![0i64; infos.len()];
        for ws in &self.score {
            if state.skip_score.contains(&ws.plugin.name()) {
                continue;
            }
            for (s, node) in scores.iter_mut().zip(&infos) {
                *s = ws.plugin.score(&state, pod, node);
            }
            ws.plugin.normalize(&state, &mut scores);
            for (t, s) in total.iter_mut().zip(&scores) {
                *t += s.clamp(&0, &MAX_NODE_SCORE) * ws.weight;
            }
        }
        // Highest total; ties broken uniformly at random (reservoir sampling, as upstream).
        let mut best = 0;
        let mut ties = 1u64;
        for i in 1..total.len() {
            if total[i] > total[best] {
                best = i;
                ties = 1;
            } else if total[i] == total[best] {
                ties += 1;
                if rotor.next_u64().is_multiple_of(ties) {
                    best = i;
                }
            }
        }
        Ok(Decision {
            node: infos[best].name.clone(),
            evaluated,
            feasible: infos.len(),
            state: Arc::new(state),
        })
    }
}

/// Upstream's `DefaultNormalizeScore`: scales to 0..=100 by the maximum, optionally reversed.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_nodes_to_find() {
        let cases = [
            (10, 0, 10),
            (99, 0, 99),
            (100, 0, 100),
            (1000, 0, 420),
            (5000, 0, 500),
            (6000, 0, 300),
            (100_000, 0, 5000),
            (1000, 30, 300),
            (1000, 100, 1000),
            (200, 10, 100),
        ];
        for (all, pct, want) in cases {
            assert_eq!(num_feasible_nodes_to_find(all, pct), want, "{all} {pct}");
        }
    }

    #[test]
    fn normalize() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        let mut s = [0, 0];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 0]);
    }
}
