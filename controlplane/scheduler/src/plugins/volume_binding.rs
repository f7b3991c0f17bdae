//! VolumeBinding, as upstream's plugin: PreFilter sorts the pod's claims into bound, unbound
//! WaitForFirstConsumer and unbound Immediate ones (which reject the pod); Filter checks bound
//! PVs' node affinity and finds, per node, a free matching PV for each delayed claim or else
//! dynamic provisioning on that node; Reserve assumes the choice in the [`VolumeStore`];
//! PreBind ([`super::volume_prebind`]) writes it and waits for every claim to be Bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, PodInfo, PreFilterPlugin, ReservePlugin, Snapshot,
    Status,
};
use crate::volumes::claims::{
    claim_request, fully_bound, is_delay_binding, resolve_claims, volume_name,
};
use crate::volumes::matching::{
    can_provision, candidate_volumes, find_matching_volume, pv_fits_node,
};
use crate::volumes::{claim_key, pod_claims, ClaimRef, VolumeStore};

/// Plugin name (and cycle-state key).
pub const NAME: &str = "VolumeBinding";
/// PreFilter reason: a claim of an Immediate class (or none) is not bound yet.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// Filter reason: no free PV and no provisioning for a delayed claim on the node.
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// Filter reason: a bound PV's node affinity excludes the node.
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Filter reason: a bound claim names a PV that does not exist.
pub const ERR_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// A claim whose binding waits for this pod.
#[derive(Debug, Clone)]
struct Delayed {
    claim: Arc<PersistentVolumeClaim>,
    selected: Option<String>,
    class: Option<Arc<StorageClass>>,
    candidates: Vec<Arc<PersistentVolume>>,
}

/// What binding the pod's volumes on one node takes.
#[derive(Debug, Clone)]
pub struct NodeVolumes {
    /// The node (PreBind rechecks provisioned PVs' affinity against it).
    pub node: Arc<Node>,
    /// Free PVs chosen for claims: (PV name, claim).
    pub static_bindings: Vec<(String, Arc<PersistentVolumeClaim>)>,
    /// Claims to provision on the node.
    pub provisions: Vec<Arc<PersistentVolumeClaim>>,
}

impl NodeVolumes {
    /// Whether nothing needs binding.
    pub fn is_empty(&self) -> bool {
        self.static_bindings.is_empty() && self.provisions.is_empty()
    }
}

/// The pod's claims as PreFilter sorted them, and Filter's per-node answers.
#[derive(Debug, Default)]
pub struct PodVolumeClaims {
    bound: Vec<(Arc<PersistentVolumeClaim>, Option<Arc<PersistentVolume>>)>,
    delayed: Vec<Delayed>,
    by_node: Mutex<HashMap<String, NodeVolumes>>,
}

impl PodVolumeClaims {
    /// Filter's answer for `node`, if it passed.
    pub fn for_node(&self, node: &str) -> Option<NodeVolumes> {
        self.by_node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }
}

/// Upstream's `bindTimeoutSeconds`: how long PreBind waits for the claims to become Bound.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// The VolumeBinding plugin.
pub struct VolumeBinding {
    /// Watched storage objects and assumptions.
    pub store: Arc<VolumeStore>,
    /// API client for PreBind's writes (`None`: decisions only, PreBind fails).
    pub client: Option<kube::Client>,
    /// How long PreBind waits for the claims to become Bound ([`BIND_TIMEOUT`]).
    pub bind_timeout: Duration,
}

impl VolumeBinding {
    /// The plugin on `store`, writing through `client`.
    pub fn new(store: Arc<VolumeStore>, client: Option<kube::Client>) -> Self {
        Self {
            store,
            client,
            bind_timeout: BIND_TIMEOUT,
        }
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _: Snapshot<'_>) -> Status {
        let uses = pod_claims(&pod.pod);
        if uses.is_empty() {
            return Status::skip();
        }
        let vols = self.store.lock();
        let claims = match resolve_claims(&pod.pod, &uses, &vols) {
            Ok(c) => c,
            Err(e) => return Status::unresolvable(e.to_string()),
        };
        let mut st = PodVolumeClaims::default();
        for c in claims {
            if fully_bound(&c) {
                let pv = volume_name(&c).and_then(|n| vols.pv(n)).cloned();
                st.bound.push((c, pv));
            } else if is_delay_binding(&c, &vols) && volume_name(&c).is_none() {
                let class = vols.class(crate::volumes::claims::claim_class(&c)).cloned();
                st.delayed.push(Delayed {
                    selected: vols.selected_node(&c),
                    candidates: candidate_volumes(&c, &vols),
                    class,
                    claim: c,
                });
            } else {
                return Status::unresolvable(ERR_UNBOUND_IMMEDIATE);
            }
        }
        // Smallest requests first, so they get the smallest fits (upstream `byPVCSize`).
        st.delayed
            .sort_by_key(|d| (claim_request(&d.claim), claim_key(&d.claim)));
        state.write(NAME, st);
        Status::ok()
    }
}

/// Upstream's FindPodVolumes for one node: the reasons it fails, or what binding takes there.
fn find_pod_volumes(st: &PodVolumeClaims, node: &NodeInfo) -> Result<NodeVolumes, Vec<String>> {
    let mut reasons = Vec::new();
    for (_, pv) in &st.bound {
        match pv {
            None => reasons.push(ERR_PV_NOT_EXIST.to_string()),
            Some(pv) if !pv_fits_node(pv, node) => reasons.push(ERR_NODE_CONFLICT.to_string()),
            Some(_) => {}
        }
    }
    if !reasons.is_empty() {
        reasons.dedup();
        return Err(reasons);
    }
    let mut out = NodeVolumes {
        node: node.node.clone(),
        static_bindings: Vec::new(),
        provisions: Vec::new(),
    };
    let mut taken: HashSet<String> = HashSet::new();
    for d in &st.delayed {
        let ok = match d.selected.as_deref() {
            Some(n) if n != node.name => false,
            Some(_) => can_provision(d.class.as_deref(), node),
            None => match find_matching_volume(&d.candidates, node, &taken) {
                Some(pv) => {
                    let name = pv.metadata.name.clone().unwrap_or_default();
                    taken.insert(name.clone());
                    out.static_bindings.push((name, d.claim.clone()));
                    continue;
                }
                None => can_provision(d.class.as_deref(), node),
            },
        };
        if !ok {
            return Err(vec![ERR_BIND_CONFLICT.to_string()]);
        }
        out.provisions.push(d.claim.clone());
    }
    Ok(out)
}

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.read::<PodVolumeClaims>(NAME) else {
            return Status::ok();
        };
        match find_pod_volumes(st, node) {
            Ok(nv) => {
                st.by_node
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node.name.clone(), nv);
                Status::ok()
            }
            Err(reasons) => Status {
                code: Code::UnschedulableAndUnresolvable,
                reasons,
            },
        }
    }
}

impl VolumeBinding {
    fn revert(&self, nv: &NodeVolumes, node: &str) {
        let mut v = self.store.lock();
        for (pv, c) in &nv.static_bindings {
            v.forget_pv(pv, &ClaimRef::to_claim(c));
        }
        for c in &nv.provisions {
            v.forget_selected_node(&claim_key(c), node);
        }
    }
}

impl ReservePlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn reserve(&self, state: &CycleState, _: &PodInfo, node: &str) -> Status {
        let Some(nv) = state
            .read::<PodVolumeClaims>(NAME)
            .and_then(|s| s.for_node(node))
        else {
            return Status::ok();
        };
        let mut v = self.store.lock();
        for (i, (pv, c)) in nv.static_bindings.iter().enumerate() {
            if !v.assume_pv(pv, ClaimRef::to_claim(c)) {
                for (pv, c) in &nv.static_bindings[..i] {
                    v.forget_pv(pv, &ClaimRef::to_claim(c));
                }
                return Status {
                    code: Code::Error,
                    reasons: vec![format!(
                        "pv \"{pv}\" was assumed for another claim meanwhile"
                    )],
                };
            }
        }
        for c in &nv.provisions {
            v.assume_selected_node(&claim_key(c), node);
        }
        Status::ok()
    }
    fn unreserve(&self, state: &CycleState, _: &PodInfo, node: &str) {
        if let Some(nv) = state
            .read::<PodVolumeClaims>(NAME)
            .and_then(|s| s.for_node(node))
        {
            self.revert(&nv, node);
        }
    }
}

#[cfg(test)]
#[path = "volume_binding_tests.rs"]
mod tests;
