//! `kennel.dev/local-disk`: the node's dynamic provisioner of disk images, in the manner of an
//! external CSI provisioner (or rancher's local-path-provisioner) running on every node.
//!
//! It watches PersistentVolumeClaims whose `volume.kubernetes.io/storage-provisioner` (or the
//! beta) annotation names it and whose class binds `Immediate`, or whose
//! `volume.kubernetes.io/selected-node` is this node. For each, in this order:
//! 1. a sparse image of the requested size holding an empty filesystem (ext4, or the class'
//!    `fsType`), `<volumes dir>/pvc-<claim uid>.img`, made atomically;
//! 2. the PersistentVolume `pvc-<claim uid>`: capacity, access modes and volume mode of the
//!    claim, the class' reclaim policy (default Delete) and mount options, `claimRef` to the
//!    claim, `nodeAffinity` `kubernetes.io/hostname In [<node>]`, a `csi` source (driver
//!    `kennel.dev/local-disk`, `volumeHandle` = the image path), annotation
//!    `pv.kubernetes.io/provisioned-by: kennel.dev/local-disk`.
//!
//! Names are deterministic, so a crash between the two steps reuses the image, and two nodes
//! racing for an Immediate claim create one PV (the loser removes its image). Events on the
//! claim: `Provisioning`, `ProvisioningSucceeded`, `ProvisioningFailed` (unknown class
//! parameter, `ReadWriteMany`, Block, no size). A PV it provisioned on this node that turns
//! `Released` with reclaim policy `Delete` loses its image, then is deleted. Once a minute,
//! images of neither a PV nor a claim are removed.

pub mod claim;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::Resource;

use crate::volume::image::{self, ImageError};
use claim::Decision;

/// The provisioner's name (the StorageClass `provisioner`).
pub const PROVISIONER: &str = "kennel.dev/local-disk";

/// Where `kennel up` keeps the images.
pub const DEFAULT_VOLUMES_DIR: &str = "/var/lib/kennel/volumes";

/// How often images of no PV and no claim are looked for.
const SWEEP: Duration = Duration::from_secs(60);

/// The provisioner's settings.
#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    /// This node's name (the PVs' node affinity; `selected-node` to act on).
    pub node_name: String,
    /// Directory of the images.
    pub volumes_dir: PathBuf,
}

/// Errors of one reconcile, or that stop the provisioner.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    /// An API call failed.
    #[error("{op}: {source}")]
    Api {
        /// What was attempted.
        op: String,
        /// Cause.
        source: kube::Error,
    },
    /// Creating or removing an image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The volumes directory cannot be made.
    #[error("creating {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A blocking task panicked.
    #[error("image task: {0}")]
    Join(String),
    /// A part of the provisioner ended.
    #[error("{0} ended")]
    Ended(&'static str),
}

fn api(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ProvisionerError {
    let op = op.into();
    move |source| ProvisionerError::Api { op, source }
}

struct Ctx {
    client: kube::Client,
    cfg: ProvisionerConfig,
    recorder: Recorder,
}

impl Ctx {
    async fn event(&self, pvc: &PersistentVolumeClaim, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            action: "Provision".into(),
            note: Some(note),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pvc.object_ref(&())).await {
            tracing::debug!("event {reason}: {e}");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ProvisionerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProvisionerError::Join(e.to_string()))?
        .map_err(ProvisionerError::from)
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default()
    )
}

async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: Arc<Ctx>,
) -> Result<Action, ProvisionerError> {
    if claim::claim_provisioner(&pvc) != Some(PROVISIONER) {
        return Ok(Action::await_change());
    }
    let Some(class_name) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .filter(|c| !c.is_empty())
    else {
        return Ok(Action::await_change());
    };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let Some(class) = classes
        .get_opt(&class_name)
        .await
        .map_err(api(format!("getting storageclass {class_name}")))?
    else {
        ctx.event(
            &pvc,
            true,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let node = ctx.cfg.node_name.as_str();
    if claim::decide(&pvc, &class, node) == Decision::Ignore {
        return Ok(Action::await_change());
    }
    let name = claim::pv_name(&pvc);
    let img = claim::image_path(&ctx.cfg.volumes_dir, &name);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Some(existing) = pvs
        .get_opt(&name)
        .await
        .map_err(api(format!("getting persistentvolume {name}")))?
    {
        settle_existing(&existing, node, &ctx, img).await?;
        return Ok(Action::await_change());
    }
    let checked = claim::class_fs_type(&class).and_then(|fs| Ok((fs, claim::claim_size(&pvc)?)));
    let (fs_type, size) = match checked {
        Ok(v) => v,
        Err(e) => {
            ctx.event(
                &pvc,
                true,
                "ProvisioningFailed",
                format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    ctx.event(
        &pvc,
        false,
        "Provisioning",
        format!(
            "External provisioner is provisioning volume for claim {:?}",
            claim_key(&pvc)
        ),
    )
    .await;
    let (path, fs) = (img.clone(), fs_type.clone());
    if let Err(e) = blocking(move || image::ensure(&path, size, &fs)).await {
        ctx.event(
            &pvc,
            true,
            "ProvisioningFailed",
            format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
        )
        .await;
        return Err(e);
    }
    let pv = claim::build_pv(&pvc, &class, node, &img, &fs_type);
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            tracing::info!(claim = %claim_key(&pvc), pv = %name, "provisioned");
            ctx.event(
                &pvc,
                false,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {name}"),
            )
            .await;
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            if let Some(existing) = pvs
                .get_opt(&name)
                .await
                .map_err(api(format!("getting persistentvolume {name}")))?
            {
                settle_existing(&existing, node, &ctx, img).await?;
            }
        }
        Err(e) => {
            ctx.event(
                &pvc,
                true,
                "ProvisioningFailed",
                format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
            )
            .await;
            return Err(api(format!("creating persistentvolume {name}"))(e));
        }
    }
    Ok(Action::await_change())
}

/// The claim's PV exists already: nothing to do when it is this node's; when another node's
/// provisioner won the race, this node's image goes.
async fn settle_existing(
    pv: &PersistentVolume,
    node: &str,
    ctx: &Ctx,
    img: PathBuf,
) -> Result<(), ProvisionerError> {
    if claim::own_image(pv, node, &ctx.cfg.volumes_dir).is_none() {
        blocking(move || image::remove(&img)).await?;
    }
    Ok(())
}

async fn reconcile_volume(
    pv: Arc<PersistentVolume>,
    ctx: Arc<Ctx>,
) -> Result<Action, ProvisionerError> {
    let Some(img) = claim::own_image(&pv, &ctx.cfg.node_name, &ctx.cfg.volumes_dir) else {
        return Ok(Action::await_change());
    };
    if !claim::should_delete(&pv) {
        return Ok(Action::await_change());
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    blocking(move || image::remove(&img)).await?;
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pv.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pvs.delete(&name, &dp).await {
        Ok(_) => tracing::info!(pv = %name, "deleted released volume and its image"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(api(format!("deleting persistentvolume {name}"))(e)),
    }
    Ok(Action::await_change())
}

fn retry<K>(_: Arc<K>, e: &ProvisionerError, _: Arc<Ctx>) -> Action {
    tracing::warn!("provisioner: {e}");
    Action::requeue(Duration::from_secs(5))
}

/// Removes images (`pvc-<uid>.img`) that no PV and no claim account for. The directory is
/// read before the lists are taken, so an image being provisioned (its claim exists before
/// its image) is never taken for an orphan.
pub async fn sweep_orphans(
    client: &kube::Client,
    cfg: &ProvisionerConfig,
) -> Result<Vec<PathBuf>, ProvisionerError> {
    let dir = cfg.volumes_dir.clone();
    let images: Vec<(String, PathBuf)> = blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let pv = file
                    .strip_suffix(".img")
                    .filter(|p| p.starts_with("pvc-"))?;
                Some((pv.to_string(), e.path()))
            })
            .collect())
    })
    .await?;
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pv_names: HashSet<String> = pvs
        .list(&ListParams::default())
        .await
        .map_err(api("listing persistentvolumes"))?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let claim_uids: HashSet<String> = pvcs
        .list(&ListParams::default())
        .await
        .map_err(api("listing persistentvolumeclaims"))?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let orphans: Vec<PathBuf> = images
        .into_iter()
        .filter(|(pv, _)| !pv_names.contains(pv) && !claim_uids.contains(&pv["pvc-".len()..]))
        .map(|(_, p)| p)
        .collect();
    blocking(move || {
        for p in &orphans {
            image::remove(p)?;
        }
        Ok(orphans)
    })
    .await
}

/// Runs the provisioner until a part of it ends (the supervisor restarts it).
pub async fn run(cfg: ProvisionerConfig, client: kube::Client) -> Result<(), ProvisionerError> {
    std::fs::create_dir_all(&cfg.volumes_dir).map_err(|source| ProvisionerError::Dir {
        path: cfg.volumes_dir.clone(),
        source,
    })?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: format!("{PROVISIONER}_{}", cfg.node_name),
                instance: Some(cfg.node_name.clone()),
            },
        ),
        cfg: cfg.clone(),
    });
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_claim, retry, ctx.clone())
    .for_each(|_| async {});
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_volume, retry, ctx.clone())
    .for_each(|_| async {});
    let sweep = async {
        loop {
            tokio::time::sleep(SWEEP).await;
            match sweep_orphans(&client, &cfg).await {
                Ok(removed) => {
                    for p in removed {
                        tracing::info!("removed orphaned image {}", p.display());
                    }
                }
                Err(e) => tracing::warn!("provisioner sweep: {e}"),
            }
        }
    };
    tokio::select! {
        () = claims => Err(ProvisionerError::Ended("claim controller")),
        () = volumes => Err(ProvisionerError::Ended("volume controller")),
        () = sweep => Err(ProvisionerError::Ended("sweep")),
    }
}
