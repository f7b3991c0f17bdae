//! VolumeRestrictions and NodeVolumeLimits for VM pods.
//!
//! - ReadWriteOncePod, as upstream: a claim with that mode used by any scheduled pod makes
//!   every node unavailable to another pod.
//! - kennel deviation: a ReadWriteOnce claim (without ReadWriteMany) used by a scheduled,
//!   non-terminated pod is unavailable on every node to another pod. Upstream lets pods on the
//!   same node share it; a pod here is a VM, and one read-write disk image cannot be attached to
//!   two VMs safely.
//! - NodeVolumeLimits: a pod VM has [`MAX_VOLUMES_PER_POD`] read-write volume slots, so a pod
//!   with more PVC-backed volumes fits no node.

use std::collections::HashSet;
use std::sync::Arc;

use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, PodInfo, PreFilterPlugin, Snapshot, Status,
};
use crate::volumes::claims::claim_modes;
use crate::volumes::{pod_claims, VolumeStore};

/// Read-write volume (virtio-blk) slots the runtime gives each pod VM for persistent volumes.
pub const MAX_VOLUMES_PER_POD: usize = 4;
/// Upstream's ReadWriteOncePod conflict reason.
pub const ERR_RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";

/// kennel's ReadWriteOnce conflict reason (a disk attaches to one pod VM).
pub fn err_rwo_conflict(claim: &str) -> String {
    format!(
        "persistentvolumeclaim \"{claim}\" is ReadWriteOnce and already attached to another pod's VM"
    )
}

/// NodeVolumeLimits' reason for a pod with too many claims.
pub fn err_too_many_volumes(n: usize) -> String {
    format!(
        "pod has {n} persistent volumes, more than the {MAX_VOLUMES_PER_POD} read-write volume slots of a pod VM"
    )
}

const KEY: &str = "VolumeRestrictions";

#[derive(Debug, Default)]
struct Conflicts {
    rwop: bool,
    rwo: Option<String>,
}

/// Whether `a` uses the claim `ns/claim` (excluding `me`).
fn users(snap: Snapshot<'_>, me: &str, ns: &str, claim: &str) -> bool {
    snap.nodes.iter().flat_map(|n| n.pods.values()).any(|p| {
        p.key != me && p.namespace == ns && pod_claims(&p.pod).iter().any(|c| c.claim == claim)
    })
}

/// The VolumeRestrictions plugin (ReadWriteOncePod, and kennel's ReadWriteOnce rule).
pub struct VolumeRestrictions {
    /// Watched claims.
    pub store: Arc<VolumeStore>,
}

impl PreFilterPlugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        KEY
    }
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: Snapshot<'_>) -> Status {
        let uses = pod_claims(&pod.pod);
        if uses.is_empty() {
            return Status::skip();
        }
        let mut c = Conflicts::default();
        let mut seen = HashSet::new();
        for u in uses {
            if !seen.insert(u.claim.clone()) {
                continue;
            }
            let modes = {
                let vols = self.store.lock();
                match vols.pvc(&format!("{}/{}", pod.namespace, u.claim)) {
                    Some(pvc) => claim_modes(pvc).to_vec(),
                    None => continue,
                }
            };
            let has = |m: &str| modes.iter().any(|x| x == m);
            let rwop = has("ReadWriteOncePod");
            let rwo = has("ReadWriteOnce") && !has("ReadWriteMany");
            if !(rwop || rwo) || !users(snap, &pod.key, &pod.namespace, &u.claim) {
                continue;
            }
            if rwop {
                c.rwop = true;
            } else if c.rwo.is_none() {
                c.rwo = Some(u.claim.clone());
            }
        }
        state.write(KEY, c);
        Status::ok()
    }
}

impl FilterPlugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        KEY
    }
    fn filter(&self, state: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status {
        let Some(c) = state.read::<Conflicts>(KEY) else {
            return Status::ok();
        };
        if c.rwop {
            return Status::unschedulable(ERR_RWOP_CONFLICT);
        }
        match &c.rwo {
            Some(claim) => Status {
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec![err_rwo_conflict(claim)],
            },
            None => Status::ok(),
        }
    }
}

/// The NodeVolumeLimits plugin (per pod VM, checked once before filtering).
pub struct NodeVolumeLimits;

impl PreFilterPlugin for NodeVolumeLimits {
    fn name(&self) -> &'static str {
        "NodeVolumeLimits"
    }
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: Snapshot<'_>) -> Status {
        let n = pod_claims(&pod.pod).len();
        if n > MAX_VOLUMES_PER_POD {
            Status::unresolvable(err_too_many_volumes(n))
        } else {
            Status::ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;
    use std::collections::{BTreeMap, HashMap};

    fn claimer(name: &str, claim: &str) -> Arc<PodInfo> {
        Arc::new(pod_meta(
            name,
            json!({}),
            json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}),
        ))
    }

    fn run(store: &Arc<VolumeStore>, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<Status> {
        let ns = HashMap::<String, BTreeMap<String, String>>::new();
        let snap = Snapshot {
            nodes,
            namespaces: &ns,
        };
        let p = VolumeRestrictions {
            store: store.clone(),
        };
        let mut st = CycleState::default();
        let pre = p.pre_filter(&mut st, pod, snap);
        assert!(pre.is_success() || pre.code == Code::Skip);
        nodes.iter().map(|n| p.filter(&st, pod, n)).collect()
    }

    #[test]
    fn one_vm_per_read_write_once_claim() {
        let store = VolumeStore::new();
        for (name, mode) in [
            ("rwo", "ReadWriteOnce"),
            ("rwx", "ReadWriteMany"),
            ("rwop", "ReadWriteOncePod"),
        ] {
            store.apply_pvc(
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                    "spec": {"accessModes": [mode]}}))
                .unwrap(),
            );
        }
        let mut a = plain("a");
        let b = plain("b");
        // Unused claims are free on every node.
        for claim in ["rwo", "rwx", "rwop"] {
            let s = run(&store, &claimer("new", claim), &[a.clone(), b.clone()]);
            assert!(s.iter().all(|s| s.is_success()), "{claim}");
        }
        a.add_pod(claimer("old-rwo", "rwo"));
        a.add_pod(claimer("old-rwx", "rwx"));
        a.add_pod(claimer("old-rwop", "rwop"));
        let s = run(&store, &claimer("new", "rwo"), &[a.clone(), b.clone()]);
        for st in &s {
            assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
            assert_eq!(st.reasons, vec![err_rwo_conflict("rwo")]);
        }
        let s = run(&store, &claimer("new", "rwop"), &[a.clone(), b.clone()]);
        for st in &s {
            assert_eq!(st.code, Code::Unschedulable);
            assert_eq!(st.reasons, vec![ERR_RWOP_CONFLICT.to_string()]);
        }
        let s = run(&store, &claimer("new", "rwx"), &[a.clone(), b.clone()]);
        assert!(s.iter().all(|s| s.is_success()), "RWX is shared");
        // The pod itself (re-scheduled after a failed binding) is not a conflict.
        let s = run(&store, &claimer("old-rwo", "rwo"), &[a.clone(), b.clone()]);
        assert!(s.iter().all(|s| s.is_success()));
        // Another namespace's claim of the same name is another claim.
        let mut other = (*claimer("x", "rwo")).clone();
        other.namespace = "other".into();
        other.key = "other/x".into();
        let s = run(&store, &other, &[a, b]);
        assert!(s.iter().all(|s| s.is_success()));
    }

    #[test]
    fn volume_slots() {
        let vols: Vec<_> = (0..5)
            .map(|i| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": format!("c{i}")}}))
            .collect();
        let five = pod(json!({"volumes": vols}));
        let four = pod(json!({"volumes": vols[..4]}));
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &[],
            namespaces: &ns,
        };
        let mut st = CycleState::default();
        let s = NodeVolumeLimits.pre_filter(&mut st, &five, snap);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec![
                "pod has 5 persistent volumes, more than the 4 read-write volume slots of a pod VM"
            ]
        );
        assert!(NodeVolumeLimits
            .pre_filter(&mut st, &four, snap)
            .is_success());
    }
}
