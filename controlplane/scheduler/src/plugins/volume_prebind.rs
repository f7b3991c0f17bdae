//! VolumeBinding's PreBind, as upstream's `BindPodVolumes`: for each static match set the PV's
//! `claimRef` to the claim (the PV controller completes the binding); for each claim to
//! provision annotate it `volume.kubernetes.io/selected-node: <node>` (the provisioner creates
//! the PV); then wait, up to `bindTimeoutSeconds`, until every claim is Bound to a PV that fits
//! the node.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use super::volume_binding::{NodeVolumes, PodVolumeClaims, VolumeBinding, NAME};
use crate::framework::{BindFailure, CycleState, PreBindPlugin};
use crate::volumes::claims::{fully_bound, volume_name};
use crate::volumes::matching::pv_fits;
use crate::volumes::{
    claim_key, ClaimRef, VolumeStore, Volumes, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE,
};

/// Why binding a pod's volumes failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeBindError {
    /// An API write failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The chosen PV is bound to another claim.
    #[error("pv \"{pv}\" is bound to another claim ({by})")]
    PvTaken {
        /// PV name.
        pv: String,
        /// `namespace/name` of the claim holding it.
        by: String,
    },
    /// The chosen PV is gone.
    #[error("pv \"{0}\" not found")]
    PvGone(String),
    /// A claim is gone.
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimGone(String),
    /// The provisioner gave the claim back (removed the selected node) to reschedule the pod.
    #[error("selectedNode annotation reset for PVC \"{0}\"")]
    SelectedNodeReset(String),
    /// The claim was bound to a PV that does not fit the node.
    #[error("pv \"{pv}\" node affinity doesn't match node \"{node}\"")]
    PvAffinity {
        /// PV name.
        pv: String,
        /// Node name.
        node: String,
    },
    /// The claims did not become Bound in time.
    #[error("timed out waiting for the condition")]
    Timeout,
}

impl PreBindPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pre_bind(
        &self,
        state: Arc<CycleState>,
        _pod: Arc<Pod>,
        node: String,
    ) -> BoxFuture<'static, Result<(), BindFailure>> {
        let nv = state
            .read::<PodVolumeClaims>(NAME)
            .and_then(|s| s.for_node(&node));
        let store = self.store.clone();
        let client = self.client.clone();
        let timeout = self.bind_timeout;
        Box::pin(async move {
            let Some(nv) = nv.filter(|nv| !nv.is_empty()) else {
                return Ok(());
            };
            let Some(client) = client else {
                return Err(BindFailure::Other(
                    "running PreBind plugin \"VolumeBinding\": no API client".into(),
                ));
            };
            bind_pod_volumes(&client, &store, &nv, timeout)
                .await
                .map_err(|e| {
                    BindFailure::Other(format!(
                        "running PreBind plugin \"VolumeBinding\": binding volumes: {e}"
                    ))
                })
        })
    }
}

/// Sets `pv.spec.claimRef` to `claim` (as upstream's `GetBindVolumeToClaim`), retrying on
/// write conflicts; a PV already pointing at the claim is left alone.
async fn bind_pv(
    client: &kube::Client,
    pv_name: &str,
    claim: &PersistentVolumeClaim,
) -> Result<(), VolumeBindError> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut pv = match api.get(pv_name).await {
            Ok(pv) => pv,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(VolumeBindError::PvGone(pv_name.into()))
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(r) = ClaimRef::of_pv(&pv) {
            if r.names(claim) {
                return Ok(());
            }
            return Err(VolumeBindError::PvTaken {
                pv: pv_name.into(),
                by: r.key(),
            });
        }
        let spec = pv.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            ..Default::default()
        });
        pv.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        match api.replace(pv_name, &PostParams::default(), &pv).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Annotates the claim with the selected node; returns the resourceVersion written.
async fn select_node(
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
    node: &str,
) -> Result<u64, VolumeBindError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(
        client.clone(),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(c) => Ok(rv(&c)),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(VolumeBindError::ClaimGone(name.into())),
        Err(e) => Err(e.into()),
    }
}

fn rv(c: &PersistentVolumeClaim) -> u64 {
    c.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Writes the decisions, then waits until every claim is Bound.
async fn bind_pod_volumes(
    client: &kube::Client,
    store: &VolumeStore,
    nv: &NodeVolumes,
    timeout: std::time::Duration,
) -> Result<(), VolumeBindError> {
    let node = nv.node.metadata.name.clone().unwrap_or_default();
    for (pv, claim) in &nv.static_bindings {
        bind_pv(client, pv, claim).await?;
    }
    let mut written = HashMap::new();
    for claim in &nv.provisions {
        written.insert(claim_key(claim), select_node(client, claim, &node).await?);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let changed = store.changes();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if check_bindings(&store.lock(), nv, &written)? {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(VolumeBindError::Timeout);
        }
        let nap = (deadline - now).min(std::time::Duration::from_secs(1));
        let _ = tokio::time::timeout(nap, changed).await;
    }
}

/// Upstream's `checkBindings` on the watched objects: `Ok(true)` once every claim is Bound to a
/// PV fitting the node, `Ok(false)` while waiting, an error when waiting cannot succeed.
/// `written` holds the resourceVersion of each selected-node write.
pub fn check_bindings(
    vols: &Volumes,
    nv: &NodeVolumes,
    written: &HashMap<String, u64>,
) -> Result<bool, VolumeBindError> {
    let node: &Node = &nv.node;
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let empty = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let mut done = true;
    for (pv, claim) in &nv.static_bindings {
        let Some(p) = vols.pv(pv) else {
            return Err(VolumeBindError::PvGone(pv.clone()));
        };
        match ClaimRef::of_pv(p) {
            None => done = false,
            Some(r) if !r.names(claim) => {
                return Err(VolumeBindError::PvTaken {
                    pv: pv.clone(),
                    by: r.key(),
                })
            }
            Some(_) => {}
        }
    }
    let claims = nv
        .static_bindings
        .iter()
        .map(|(_, c)| c)
        .chain(nv.provisions.iter());
    for claim in claims {
        let key = claim_key(claim);
        let Some(cur) = vols.pvc(&key) else {
            return Err(VolumeBindError::ClaimGone(
                claim.metadata.name.clone().unwrap_or_default(),
            ));
        };
        if !fully_bound(cur) {
            done = false;
            let annotated = cur
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANN_SELECTED_NODE));
            if let Some(&w) = written.get(&key) {
                if !annotated && rv(cur) >= w {
                    return Err(VolumeBindError::SelectedNodeReset(
                        claim.metadata.name.clone().unwrap_or_default(),
                    ));
                }
            }
            continue;
        }
        let pv_name = volume_name(cur).unwrap_or_default();
        match vols.pv(pv_name) {
            None => done = false,
            Some(pv) if !pv_fits(pv, &node_name, labels) => {
                return Err(VolumeBindError::PvAffinity {
                    pv: pv_name.into(),
                    node: node_name,
                })
            }
            Some(_) => {}
        }
    }
    Ok(done)
}
