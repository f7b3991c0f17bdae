//! Pod volumes backed by PersistentVolumes: the claim → PV resolution kubelet does, the PV's
//! source turned into a disk image on this host, and the descriptor kennel-cri reads to attach
//! that image read-write (or read-only) to the pod VM as a virtio-blk disk.
//!
//! The contract with kennel-cri: for each such volume the node agent creates
//! `<pods-root>/<uid>/volumes/kubernetes.io~kennel-disk/<volume>/` and writes in it, atomically,
//! `kennel-disk.json`: `{"image": "/abs/path", "fsType": "ext4", "readOnly": false}`. Each CRI
//! mount of the volume has that directory as `host_path` (or `<dir>/<subPath>`, a path inside
//! the disk's filesystem, not created on the host).
//!
//! PV sources:
//! - `local` / `hostPath` naming a **directory**: the image is `<path>/kennel-disk.img`, created
//!   sparse at `capacity.storage` and formatted the first time; `hostPath` types `""` and
//!   `DirectoryOrCreate` create the directory, `FileOrCreate` creates the image at the path;
//! - `local` / `hostPath` naming a **regular file**: the file is the image, as it is (`fsType`
//!   from `local.fsType`, default ext4);
//! - `csi` with driver `kennel.dev/local-disk` (what the node's provisioner creates): the
//!   `volumeHandle` is the image's absolute path, `fsType` from `csi.fsType` (default ext4).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde::{Deserialize, Serialize};

use super::image::{self, ImageError, DEFAULT_FS_TYPE};

/// The kubelet plugin directory name of these volumes (`kubernetes.io~kennel-disk`).
pub const PLUGIN: &str = "kennel-disk";
/// The descriptor's file name.
pub const DESCRIPTOR: &str = "kennel-disk.json";
/// The image's name inside a directory PV.
pub const DIR_IMAGE: &str = "kennel-disk.img";
/// The CSI driver name of the volumes the node's provisioner makes.
pub const CSI_DRIVER: &str = "kennel.dev/local-disk";

/// What kennel-cri reads: the image to attach, its filesystem, and whether it is read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskDescriptor {
    /// Absolute path of the image file.
    pub image: String,
    /// Its filesystem.
    pub fs_type: String,
    /// Attach read-only.
    pub read_only: bool,
}

/// Errors resolving or preparing a PV-backed volume (messages as kubelet's FailedMount).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The claim does not exist.
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimNotFound(String),
    /// The claim is being deleted.
    #[error("can't start pod because PVC {0} is being deleted")]
    ClaimDeleting(String),
    /// The claim is not bound (kubelet's message; the pod waits).
    #[error(
        "PVC {claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
    )]
    ClaimNotBound {
        /// `<ns>/<name>`.
        claim: String,
        /// `status.phase`.
        phase: String,
        /// `spec.volumeName`.
        volume: String,
    },
    /// The PV the claim names does not exist.
    #[error("failed to fetch PV {0:?} from API server: persistentvolume {0:?} not found")]
    VolumeNotFound(String),
    /// The PV is bound to another claim.
    #[error("found PV object {pv:?} but its ClaimRef.UID ({have:?}) does not point to claim.UID ({want:?})")]
    ClaimRefMismatch {
        /// PV name.
        pv: String,
        /// `spec.claimRef.uid`.
        have: String,
        /// The claim's uid.
        want: String,
    },
    /// The PV's node affinity excludes this node.
    #[error("volume node affinity conflict: persistentvolume {pv:?} is not accessible from node {node:?}")]
    NodeAffinity {
        /// PV name.
        pv: String,
        /// This node.
        node: String,
    },
    /// A PV source kennel cannot attach as a disk.
    #[error("persistentvolume {pv:?}: {kind} volumes are not supported (kennel attaches local, hostPath and csi driver kennel.dev/local-disk volumes)")]
    Unsupported {
        /// PV name.
        pv: String,
        /// The source type.
        kind: String,
    },
    /// The PV's path is missing or of the wrong kind.
    #[error("persistentvolume {pv:?}: {message}")]
    BadPath {
        /// PV name.
        pv: String,
        /// What is wrong.
        message: String,
    },
    /// A directory PV without a usable `capacity.storage`.
    #[error("persistentvolume {0:?}: capacity.storage is missing or not positive")]
    NoCapacity(String),
    /// The image could not be created.
    #[error("persistentvolume {pv:?}: {source}")]
    Image {
        /// PV name.
        pv: String,
        /// Cause.
        source: ImageError,
    },
    /// Writing the volume directory or descriptor failed.
    #[error("{op}: {source}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// How a PV reaches this host as an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The image.
    pub image: PathBuf,
    /// Its filesystem.
    pub fs_type: String,
    /// Read-only by the PV source (`csi.readOnly`).
    pub read_only: bool,
    /// Create the image at this size when absent (directory PVs, `FileOrCreate`).
    pub create_size: Option<i64>,
    /// Create this directory first (`hostPath` `DirectoryOrCreate`).
    pub create_dir: Option<PathBuf>,
}

/// The bound PV's name of a claim (kubelet's checks: exists, not being deleted, Bound).
pub fn claim_volume(
    ns: &str,
    name: &str,
    pvc: Option<&PersistentVolumeClaim>,
) -> Result<String, DiskError> {
    let pvc = pvc.ok_or_else(|| DiskError::ClaimNotFound(name.to_string()))?;
    let key = format!("{ns}/{name}");
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(DiskError::ClaimDeleting(key));
    }
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(DiskError::ClaimNotBound {
            claim: key,
            phase,
            volume,
        });
    }
    Ok(volume)
}

fn capacity(pv: &PersistentVolume) -> Option<i64> {
    pv.spec
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .map(crate::pod::spec::quantity_bytes)
        .filter(|b| *b > 0)
}

enum PathKind {
    Dir,
    File,
    Missing,
    Other,
}

fn path_kind(p: &Path) -> PathKind {
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => PathKind::Dir,
        Ok(m) if m.is_file() => PathKind::File,
        Ok(_) => PathKind::Other,
        Err(_) => PathKind::Missing,
    }
}

/// Decides how `pv` (bound to the claim `claim_uid`) becomes an image on the node `node` with
/// `labels`; reads the file system (is the path a directory or a file) but changes nothing.
pub fn plan(
    pv: &PersistentVolume,
    claim_uid: &str,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> Result<DiskPlan, DiskError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(r) = &spec.claim_ref {
        let have = r.uid.clone().unwrap_or_default();
        if !have.is_empty() && !claim_uid.is_empty() && have != claim_uid {
            return Err(DiskError::ClaimRefMismatch {
                pv: name,
                have,
                want: claim_uid.to_string(),
            });
        }
    }
    if !super::affinity::matches(pv, node, labels) {
        return Err(DiskError::NodeAffinity {
            pv: name,
            node: node.to_string(),
        });
    }
    let bad = |message: String| DiskError::BadPath {
        pv: name.clone(),
        message,
    };
    let dir_plan = |dir: &Path, create_dir: bool, fs_type: String| -> Result<DiskPlan, DiskError> {
        Ok(DiskPlan {
            image: dir.join(DIR_IMAGE),
            fs_type,
            read_only: false,
            create_size: Some(capacity(pv).ok_or_else(|| DiskError::NoCapacity(name.clone()))?),
            create_dir: create_dir.then(|| dir.to_path_buf()),
        })
    };
    let file_plan = |p: &Path, fs_type: String| DiskPlan {
        image: p.to_path_buf(),
        fs_type,
        read_only: false,
        create_size: None,
        create_dir: None,
    };
    let absolute = |p: &str| -> Result<PathBuf, DiskError> {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(bad(format!(
                "path {:?} is not absolute",
                p.display().to_string()
            )))
        }
    };
    if let Some(l) = &spec.local {
        let p = absolute(&l.path)?;
        let fs_type = l.fs_type.clone().filter(|f| !f.is_empty());
        return match path_kind(&p) {
            PathKind::Dir => dir_plan(&p, false, fs_type.unwrap_or_else(|| DEFAULT_FS_TYPE.into())),
            PathKind::File => Ok(file_plan(
                &p,
                fs_type.unwrap_or_else(|| DEFAULT_FS_TYPE.into()),
            )),
            PathKind::Missing => Err(bad(format!("path {:?} does not exist", l.path))),
            PathKind::Other => Err(bad(format!(
                "path {:?} is neither a directory nor a regular file",
                l.path
            ))),
        };
    }
    if let Some(h) = &spec.host_path {
        let p = absolute(&h.path)?;
        let ty = h.type_.clone().unwrap_or_default();
        let fs = || DEFAULT_FS_TYPE.to_string();
        return match (ty.as_str(), path_kind(&p)) {
            ("" | "Directory" | "DirectoryOrCreate", PathKind::Dir) => dir_plan(&p, false, fs()),
            ("" | "DirectoryOrCreate", PathKind::Missing) => dir_plan(&p, true, fs()),
            ("" | "File" | "FileOrCreate", PathKind::File) => Ok(file_plan(&p, fs())),
            ("FileOrCreate", PathKind::Missing) => Ok(DiskPlan {
                create_size: Some(capacity(pv).ok_or_else(|| DiskError::NoCapacity(name.clone()))?),
                ..file_plan(&p, fs())
            }),
            ("Directory", _) => Err(bad(format!(
                "hostPath type check failed: {} is not a directory",
                h.path
            ))),
            ("File" | "FileOrCreate", _) => Err(bad(format!(
                "hostPath type check failed: {} is not a file",
                h.path
            ))),
            ("DirectoryOrCreate", _) => Err(bad(format!(
                "hostPath type check failed: {} is not a directory",
                h.path
            ))),
            ("Socket" | "CharDevice" | "BlockDevice", _) => Err(DiskError::Unsupported {
                pv: name.clone(),
                kind: format!("hostPath type {ty}"),
            }),
            (_, PathKind::Missing) => Err(bad(format!("path {:?} does not exist", h.path))),
            (other, _) => Err(DiskError::Unsupported {
                pv: name.clone(),
                kind: format!("hostPath type {other}"),
            }),
        };
    }
    if let Some(c) = &spec.csi {
        if c.driver != CSI_DRIVER {
            return Err(DiskError::Unsupported {
                pv: name,
                kind: format!("csi driver {:?}", c.driver),
            });
        }
        let p = absolute(&c.volume_handle)?;
        let fs_type = c
            .fs_type
            .clone()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| DEFAULT_FS_TYPE.into());
        return match path_kind(&p) {
            PathKind::File => Ok(DiskPlan {
                read_only: c.read_only.unwrap_or(false),
                ..file_plan(&p, fs_type)
            }),
            _ => Err(bad(format!(
                "image {:?} does not exist on node {node:?}",
                c.volume_handle
            ))),
        };
    }
    let kind = serde_json::to_value(&spec)
        .ok()
        .and_then(|j| {
            j.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !NON_SOURCE_FIELDS.contains(&k.as_str()))
                    .cloned()
            })
        })
        .unwrap_or_else(|| "sourceless".into());
    Err(DiskError::Unsupported { pv: name, kind })
}

/// PersistentVolumeSpec fields that are not a volume source.
const NON_SOURCE_FIELDS: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
];

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> DiskError {
    let op = op.into();
    move |source| DiskError::Io { op, source }
}

/// Carries out a plan for the PV `pv`: creates the directory and the image as it says.
pub fn realize(pv: &str, plan: &DiskPlan) -> Result<(), DiskError> {
    if let Some(d) = &plan.create_dir {
        fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    if let Some(size) = plan.create_size {
        image::ensure(&plan.image, size, &plan.fs_type).map_err(|source| DiskError::Image {
            pv: pv.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Writes `desc` as `<dir>/kennel-disk.json` (temp file, fsync, rename; unchanged content is
/// left alone).
pub fn write_descriptor(dir: &Path, desc: &DiskDescriptor) -> Result<(), DiskError> {
    let path = dir.join(DESCRIPTOR);
    let mut body = serde_json::to_vec_pretty(desc).expect("descriptor serializes");
    body.push(b'\n');
    if fs::read(&path).is_ok_and(|have| have == body) {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(".{DESCRIPTOR}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Reads a descriptor back.
pub fn read_descriptor(dir: &Path) -> Option<DiskDescriptor> {
    serde_json::from_slice(&fs::read(dir.join(DESCRIPTOR)).ok()?).ok()
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
