//! The PersistentVolume controllers of kube-controller-manager: the binder (upstream's
//! `persistentvolume` controller: claims matched to volumes, the two-sided bind, the hand-off to
//! external provisioners, reclaiming released volumes), and the `pvc-protection` and
//! `pv-protection` controllers that hold the `kubernetes.io/pvc-protection` and
//! `kubernetes.io/pv-protection` finalizers while a claim is used by a pod or a volume is Bound.
//!
//! The module runs its own informers for PersistentVolumes, PersistentVolumeClaims and
//! StorageClasses (pods come from the shared [`Ctx`]) and keeps the objects it wrote itself
//! ([`Fresh`]) so a reconcile never acts on a version older than its own last write.

pub mod binder;
pub mod claim;
pub mod protection;
pub mod pv;
pub mod util;
pub mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::informer::{Change, Informer};
use crate::Ctx;

/// Claim annotation: the binding passed through its initial setup.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Volume and claim annotation: the binding was made by a controller, not pre-bound by a user.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Volume annotation: the provisioner that created it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Claim annotation: the provisioner asked to provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The same, under its beta name (still set, as upstream does).
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Claim annotation: the node the scheduler chose for a delayed-binding claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The legacy class annotation of claims and volumes.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// StorageClass annotation marking the default class.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The same, under its beta name.
pub const ANN_BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// Finalizer held while a claim is in use by a pod.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Finalizer held while a volume is Bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// How often every claim and volume is synced again (upstream's
/// `--pvclaimbinder-sync-period`).
pub const RESYNC: Duration = Duration::from_secs(15);

/// Errors of one claim or volume sync.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// An API call failed.
    #[error("{what} {name}: {source}")]
    Api {
        /// What was attempted.
        what: &'static str,
        /// The object.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// A claim names a volume that is bound to another claim by the controller.
    #[error("invalid binding of claim {claim:?} to volume {volume:?}: volume already claimed by {other:?}")]
    Misbound {
        /// `namespace/name` of the claim.
        claim: String,
        /// The volume.
        volume: String,
        /// `namespace/name` of the claim the volume points at.
        other: String,
    },
    /// A volume to bind has no `storage` capacity.
    #[error("PersistentVolume {0:?} is without a storage capacity")]
    NoCapacity(String),
}

/// The last version of objects this module wrote, until the informer catches up.
pub struct Fresh<K> {
    objs: Mutex<HashMap<String, Arc<K>>>,
}

impl<K> Default for Fresh<K> {
    fn default() -> Self {
        Self {
            objs: Mutex::default(),
        }
    }
}

fn rv<K: Resource>(o: &K) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn fresh_key<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or(""),
        o.meta().name.as_deref().unwrap_or("")
    )
}

impl<K: Resource + Clone> Fresh<K> {
    /// Records a version just written.
    pub fn put(&self, o: K) -> Arc<K> {
        let o = Arc::new(o);
        self.objs
            .lock()
            .expect("fresh lock")
            .insert(fresh_key(&*o), o.clone());
        o
    }

    /// The newer of the informer's version and the one written here.
    pub fn latest(&self, o: Arc<K>) -> Arc<K> {
        let mut m = self.objs.lock().expect("fresh lock");
        let k = fresh_key(&*o);
        match m.get(&k) {
            Some(w) if rv(&**w) > rv(&*o) && w.meta().uid == o.meta().uid => w.clone(),
            Some(_) => {
                m.remove(&k);
                o
            }
            None => o,
        }
    }

    /// Forgets an object (it was deleted).
    pub fn forget(&self, o: &K) {
        self.objs.lock().expect("fresh lock").remove(&fresh_key(o));
    }
}

/// What the volume controllers share.
pub struct Volumes {
    /// The controller manager's context (client, pods, events, backoff).
    pub ctx: Arc<Ctx>,
    /// All PersistentVolumes.
    pub pvs: Informer<PersistentVolume>,
    /// All PersistentVolumeClaims.
    pub pvcs: Informer<PersistentVolumeClaim>,
    /// All StorageClasses.
    pub classes: Informer<StorageClass>,
    /// Volumes written here.
    pub fresh_pv: Fresh<PersistentVolume>,
    /// Claims written here.
    pub fresh_pvc: Fresh<PersistentVolumeClaim>,
}

impl Volumes {
    fn new(ctx: Arc<Ctx>) -> Arc<Self> {
        let v = Arc::new(Self {
            ctx,
            pvs: Informer::new(),
            pvcs: Informer::new(),
            classes: Informer::new(),
            fresh_pv: Fresh::default(),
            fresh_pvc: Fresh::default(),
        });
        let weak = Arc::downgrade(&v);
        v.pvs.on_change(move |c| {
            if let (Change::Deleted(o), Some(v)) = (c, weak.upgrade()) {
                v.fresh_pv.forget(o);
            }
        });
        let weak = Arc::downgrade(&v);
        v.pvcs.on_change(move |c| {
            if let (Change::Deleted(o), Some(v)) = (c, weak.upgrade()) {
                v.fresh_pvc.forget(o);
            }
        });
        v
    }

    /// A volume by name, newest version known.
    pub fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.pvs.get("", name).map(|o| self.fresh_pv.latest(o))
    }

    /// Every volume, newest versions known.
    pub fn all_volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.pvs
            .all()
            .into_iter()
            .map(|o| self.fresh_pv.latest(o))
            .collect()
    }

    /// A claim by namespace and name, newest version known.
    pub fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.pvcs.get(ns, name).map(|o| self.fresh_pvc.latest(o))
    }

    /// The volumes API.
    pub fn pv_api(&self) -> Api<PersistentVolume> {
        Api::all(self.ctx.client.clone())
    }

    /// The claims API of `c`'s namespace.
    pub fn pvc_api(&self, c: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.ctx.client.clone(), &c.namespace().unwrap_or_default())
    }

    /// Waits for the shared informers and this module's.
    pub async fn ready(&self) {
        self.ctx.ready().await;
        tokio::join!(self.pvs.ready(), self.pvcs.ready(), self.classes.ready());
    }

    async fn run_informers(&self) {
        let c = &self.ctx.client;
        tokio::join!(
            self.pvs.clone().run(Api::all(c.clone())),
            self.pvcs.clone().run(Api::all(c.clone())),
            self.classes.clone().run(Api::all(c.clone())),
        );
    }
}

/// The error policy of the volume controllers: retry the key after its backoff.
pub fn error_policy<K>(obj: Arc<K>, err: &VolumeError, v: Arc<Volumes>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    crate::ctx::error_policy(obj, err, v.ctx.clone())
}

/// Runs the binder and both protection controllers (forever); the controllers subscribe now,
/// before any informer runs.
pub fn run(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let v = Volumes::new(ctx);
    let claims = claim::controller(v.clone());
    let volumes = pv::controller(v.clone());
    let pvc_protection = protection::pvc_controller(v.clone());
    let pv_protection = protection::pv_controller(v.clone());
    async move {
        tokio::join!(
            v.run_informers(),
            claims,
            volumes,
            pvc_protection,
            pv_protection
        );
    }
}
