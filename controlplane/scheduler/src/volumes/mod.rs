//! What the volume plugins know about storage: PersistentVolumes, PersistentVolumeClaims and
//! StorageClasses from watches, plus upstream's "assume cache" (a PV assumed bound to a claim, a
//! claim assumed to have a selected node) so that two pods decided one after the other never pick
//! the same PV before the API shows either choice.

pub mod claims;
pub mod matching;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use tokio::sync::Notify;

pub use claims::{claim_key, pod_claims, ClaimUse, PodClaimError};

/// Annotation the scheduler sets on a claim to ask for provisioning on a node.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Annotation the PV controller sets on a claim once binding is complete.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Annotation on a PV bound by a controller (or the scheduler) rather than pre-bound by a user.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The legacy class annotation (still honoured by upstream).
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner name meaning "no dynamic provisioning" (local static PVs).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The claim a PV is (assumed) bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// Namespace of the claim.
    pub namespace: String,
    /// Name of the claim.
    pub name: String,
    /// UID of the claim (empty when a user pre-bound by name only).
    pub uid: String,
}

impl ClaimRef {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The PV's `spec.claimRef`, if any.
    pub fn of_pv(pv: &PersistentVolume) -> Option<Self> {
        let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
        Some(Self {
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone().unwrap_or_default(),
        })
    }

    /// The reference to `claim`.
    pub fn to_claim(claim: &PersistentVolumeClaim) -> Self {
        Self {
            namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            name: claim.metadata.name.clone().unwrap_or_default(),
            uid: claim.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// Whether this reference names `claim` (an empty uid matches any uid, as upstream).
    pub fn names(&self, claim: &PersistentVolumeClaim) -> bool {
        let c = Self::to_claim(claim);
        self.namespace == c.namespace
            && self.name == c.name
            && (self.uid.is_empty() || self.uid == c.uid)
    }
}

/// The watched storage objects and the scheduler's assumptions on top of them.
#[derive(Debug, Default)]
pub struct Volumes {
    pvs: HashMap<String, Arc<PersistentVolume>>,
    pvcs: HashMap<String, Arc<PersistentVolumeClaim>>,
    classes: HashMap<String, Arc<StorageClass>>,
    /// PV name → the claim a reserved pod will bind it to.
    assumed_pvs: HashMap<String, ClaimRef>,
    /// Claim key → the node a reserved pod selected for provisioning.
    assumed_nodes: HashMap<String, String>,
}

fn name_of<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

impl Volumes {
    /// The claim `namespace/name`.
    pub fn pvc(&self, key: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.pvcs.get(key)
    }

    /// The PV named `name`.
    pub fn pv(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.pvs.get(name)
    }

    /// The StorageClass named `name`.
    pub fn class(&self, name: &str) -> Option<&Arc<StorageClass>> {
        self.classes.get(name)
    }

    /// Every PV, by name.
    pub fn pvs(&self) -> impl Iterator<Item = &Arc<PersistentVolume>> {
        self.pvs.values()
    }

    /// The claim a PV is bound to, counting the scheduler's assumption.
    pub fn pv_claim(&self, pv: &PersistentVolume) -> Option<ClaimRef> {
        ClaimRef::of_pv(pv).or_else(|| self.assumed_pvs.get(&name_of(pv)).cloned())
    }

    /// The claim's selected node, counting the scheduler's assumption.
    pub fn selected_node(&self, claim: &PersistentVolumeClaim) -> Option<String> {
        claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_SELECTED_NODE))
            .cloned()
            .or_else(|| self.assumed_nodes.get(&claim_key(claim)).cloned())
    }

    /// Assumes `pv` bound to `claim`; false when another claim holds it already.
    pub fn assume_pv(&mut self, pv: &str, claim: ClaimRef) -> bool {
        let current = self.pvs.get(pv).and_then(|p| ClaimRef::of_pv(p));
        if let Some(cur) = current.or_else(|| self.assumed_pvs.get(pv).cloned()) {
            return cur.key() == claim.key();
        }
        self.assumed_pvs.insert(pv.to_string(), claim);
        true
    }

    /// Drops the assumption on `pv` made for `claim`.
    pub fn forget_pv(&mut self, pv: &str, claim: &ClaimRef) {
        if self.assumed_pvs.get(pv) == Some(claim) {
            self.assumed_pvs.remove(pv);
        }
    }

    /// Assumes `node` selected for the claim `key`.
    pub fn assume_selected_node(&mut self, key: &str, node: &str) {
        self.assumed_nodes.insert(key.to_string(), node.to_string());
    }

    /// Drops the selected-node assumption on claim `key` made for `node`.
    pub fn forget_selected_node(&mut self, key: &str, node: &str) {
        if self.assumed_nodes.get(key).map(String::as_str) == Some(node) {
            self.assumed_nodes.remove(key);
        }
    }

    /// Number of assumptions held (tests and diagnostics).
    pub fn assumed_count(&self) -> usize {
        self.assumed_pvs.len() + self.assumed_nodes.len()
    }
}

/// [`Volumes`] shared by the scheduling loop (which applies watch events and reserves) and the
/// binding tasks (which wait for claims to become bound).
#[derive(Debug, Default)]
pub struct VolumeStore {
    inner: Mutex<Volumes>,
    changed: Notify,
}

/// A kind of storage object the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PersistentVolume.
    Pv,
    /// PersistentVolumeClaim.
    Pvc,
    /// StorageClass.
    Class,
}

impl VolumeStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Locks the store for reading or reserving.
    pub fn lock(&self) -> MutexGuard<'_, Volumes> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A future resolving at the store's next change (`enable` it before checking state, so a
    /// change in between is not missed; callers recheck after waking).
    pub fn changes(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Adds or updates a PV; an observed `claimRef` supersedes the assumption.
    pub fn apply_pv(&self, pv: PersistentVolume) {
        let name = name_of(&pv);
        {
            let mut v = self.lock();
            if ClaimRef::of_pv(&pv).is_some() {
                v.assumed_pvs.remove(&name);
            }
            v.pvs.insert(name, Arc::new(pv));
        }
        self.changed.notify_waiters();
    }

    /// Adds or updates a claim; an observed selected node or binding supersedes the assumption.
    pub fn apply_pvc(&self, pvc: PersistentVolumeClaim) {
        let key = claim_key(&pvc);
        {
            let mut v = self.lock();
            let annotated = pvc
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANN_SELECTED_NODE));
            if annotated || claims::fully_bound(&pvc) {
                v.assumed_nodes.remove(&key);
            }
            v.pvcs.insert(key, Arc::new(pvc));
        }
        self.changed.notify_waiters();
    }

    /// Adds or updates a StorageClass.
    pub fn apply_class(&self, sc: StorageClass) {
        self.lock().classes.insert(name_of(&sc), Arc::new(sc));
        self.changed.notify_waiters();
    }

    /// Removes an object of `kind` by key (`namespace/name` for claims, name otherwise).
    pub fn remove(&self, kind: Kind, key: &str) {
        {
            let mut v = self.lock();
            match kind {
                Kind::Pv => {
                    v.pvs.remove(key);
                    v.assumed_pvs.remove(key);
                }
                Kind::Pvc => {
                    v.pvcs.remove(key);
                    v.assumed_nodes.remove(key);
                }
                Kind::Class => {
                    v.classes.remove(key);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Keys of every object of `kind` (for relists).
    pub fn keys(&self, kind: Kind) -> Vec<String> {
        let v = self.lock();
        match kind {
            Kind::Pv => v.pvs.keys().cloned().collect(),
            Kind::Pvc => v.pvcs.keys().cloned().collect(),
            Kind::Class => v.classes.keys().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, claim: Option<&str>) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name}, "spec": {}});
        if let Some(c) = claim {
            v["spec"]["claimRef"] = json!({"namespace": "default", "name": c, "uid": "u1"});
        }
        serde_json::from_value(v).unwrap()
    }

    fn cref(name: &str) -> ClaimRef {
        ClaimRef {
            namespace: "default".into(),
            name: name.into(),
            uid: "u".into(),
        }
    }

    #[test]
    fn assume_until_observed() {
        let s = VolumeStore::new();
        s.apply_pv(pv("a", None));
        assert!(s.lock().assume_pv("a", cref("c1")));
        assert!(!s.lock().assume_pv("a", cref("c2")), "taken by c1");
        assert!(s.lock().assume_pv("a", cref("c1")), "idempotent");
        let a = s.lock().pv("a").cloned().unwrap();
        assert_eq!(s.lock().pv_claim(&a).unwrap().name, "c1");
        // Forget by the wrong claim is a no-op; by the right one clears.
        s.lock().forget_pv("a", &cref("c2"));
        assert_eq!(s.lock().assumed_count(), 1);
        s.lock().forget_pv("a", &cref("c1"));
        assert_eq!(s.lock().assumed_count(), 0);
        // The watch showing the binding supersedes the assumption.
        assert!(s.lock().assume_pv("a", cref("c1")));
        s.apply_pv(pv("a", Some("c1")));
        assert_eq!(s.lock().assumed_count(), 0);
        assert!(!s.lock().assume_pv("a", cref("c2")));
    }

    #[test]
    fn selected_node_assumption() {
        let s = VolumeStore::new();
        let c: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "default"}}))
                .unwrap();
        s.apply_pvc(c.clone());
        s.lock().assume_selected_node("default/c", "n1");
        assert_eq!(s.lock().selected_node(&c).as_deref(), Some("n1"));
        s.lock().forget_selected_node("default/c", "n2");
        assert_eq!(s.lock().selected_node(&c).as_deref(), Some("n1"));
        let mut annotated = c.clone();
        annotated.metadata.annotations =
            Some([(ANN_SELECTED_NODE.to_string(), "n1".to_string())].into());
        s.apply_pvc(annotated.clone());
        assert_eq!(s.lock().assumed_count(), 0);
        assert_eq!(s.lock().selected_node(&annotated).as_deref(), Some("n1"));
        s.remove(Kind::Pvc, "default/c");
        assert!(s.lock().pvc("default/c").is_none());
    }
}
