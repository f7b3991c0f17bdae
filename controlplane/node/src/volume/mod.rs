//! Pod volumes on the host, laid out as kubelet does under
//! `<pods-root>/<uid>/volumes/kubernetes.io~<plugin>/<name>` (atomic-writer layout, see
//! [`writer`]), and each container's `volumeMounts` as CRI mounts. kennel-cri copies the
//! files into the pod VM; emptyDirs live in the guest, so their host directory only marks them.
//!
//! Supported: configMap, secret, downwardAPI, projected (configMap, secret, downwardAPI and
//! serviceAccountToken sources, the tokens from [`token::TokenManager`]), emptyDir, hostPath,
//! persistentVolumeClaim (a disk image attached to the VM, see [`disk`]); other volume types are
//! refused with a message naming them.

pub mod affinity;
pub mod disk;
pub mod image;
pub mod token;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use crate::env::{EnvContext, EnvError};
use writer::{FileProjection, Payload, WriterError};

/// Kubelet's default file mode of configMap/secret/downwardAPI/projected files.
pub const DEFAULT_MODE: u32 = 0o644;

/// Errors preparing a pod's volumes (messages as kubelet's FailedMount events).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A required ConfigMap does not exist.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : configmap \"{name}\" not found")]
    ConfigMapNotFound {
        /// Volume name.
        volume: String,
        /// ConfigMap name.
        name: String,
    },
    /// A required Secret does not exist.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : secret \"{name}\" not found")]
    SecretNotFound {
        /// Volume name.
        volume: String,
        /// Secret name.
        name: String,
    },
    /// An item names a key the object does not have.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {kind} references non-existent {what} key: {key}")]
    KeyNotFound {
        /// Volume name.
        volume: String,
        /// configmap or secret.
        kind: &'static str,
        /// config or secret.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// A downward API item could not be resolved.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    DownwardApi {
        /// Volume name.
        volume: String,
        /// Cause.
        source: EnvError,
    },
    /// A ServiceAccount token could not be had.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    Token {
        /// Volume name.
        volume: String,
        /// Cause.
        source: token::TokenError,
    },
    /// A token projection has no token among those fetched for the pod.
    #[error(
        "MountVolume.SetUp failed for volume \"{volume}\" : no token was fetched for {path:?}"
    )]
    TokenMissing {
        /// Volume name.
        volume: String,
        /// The projection's path.
        path: String,
    },
    /// Writing the files failed.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    Write {
        /// Volume name.
        volume: String,
        /// Cause.
        source: WriterError,
    },
    /// A PersistentVolume-backed volume could not be set up.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    Disk {
        /// Volume name.
        volume: String,
        /// Cause.
        source: disk::DiskError,
    },
    /// A volume type kennel does not provide yet.
    #[error("volume \"{volume}\": {kind} volumes are not supported yet")]
    Unsupported {
        /// Volume name.
        volume: String,
        /// The type.
        kind: String,
    },
    /// A volumeMount names no volume of the pod.
    #[error("container {container}: volumeMount {name:?} names no volume of the pod")]
    NoVolume {
        /// Container name.
        container: String,
        /// The mount's volume name.
        name: String,
    },
    /// A volumeMount field kennel does not support yet.
    #[error("container {container}: volumeMount {name:?}: {what} is not supported yet")]
    MountUnsupported {
        /// Container name.
        container: String,
        /// The mount's volume name.
        name: String,
        /// Which field.
        what: &'static str,
    },
}

/// ConfigMaps and Secrets the pod's volumes reference: name → every reference is optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VolumeRefs {
    /// ConfigMaps.
    pub config_maps: BTreeMap<String, bool>,
    /// Secrets.
    pub secrets: BTreeMap<String, bool>,
}

fn add(map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>) {
    let opt = optional.unwrap_or(false);
    map.entry(name.to_string())
        .and_modify(|o| *o &= opt)
        .or_insert(opt);
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// The objects the pod's volumes read.
pub fn referenced(pod: &Pod) -> VolumeRefs {
    let mut r = VolumeRefs::default();
    for v in volumes(pod) {
        if let Some(cm) = &v.config_map {
            add(&mut r.config_maps, &cm.name, cm.optional);
        }
        if let Some(s) = &v.secret {
            add(
                &mut r.secrets,
                s.secret_name.as_deref().unwrap_or_default(),
                s.optional,
            );
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                add(&mut r.config_maps, &cm.name, cm.optional);
            }
            if let Some(s) = &src.secret {
                add(&mut r.secrets, &s.name, s.optional);
            }
        }
    }
    r
}

/// `<pods-root>/<uid>/volumes/kubernetes.io~<plugin>/<name>`.
pub fn volume_dir(pods_root: &Path, uid: &str, plugin: &str, name: &str) -> PathBuf {
    pods_root
        .join(uid)
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

/// The kubelet plugin directory of a volume (None: hostPath, which has no directory).
fn plugin(v: &Volume) -> Result<Option<&'static str>, VolumeError> {
    Ok(Some(if v.config_map.is_some() {
        "configmap"
    } else if v.secret.is_some() {
        "secret"
    } else if v.downward_api.is_some() {
        "downward-api"
    } else if v.projected.is_some() {
        "projected"
    } else if v.empty_dir.is_some() {
        "empty-dir"
    } else if v.persistent_volume_claim.is_some() {
        disk::PLUGIN
    } else if v.host_path.is_some() {
        return Ok(None);
    } else {
        let kind = serde_json::to_value(v)
            .ok()
            .and_then(|j| {
                j.as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            })
            .unwrap_or_else(|| "this".into());
        return Err(VolumeError::Unsupported {
            volume: v.name.clone(),
            kind,
        });
    }))
}

fn mode(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default)
        .map_or(DEFAULT_MODE, |m| (m as u32) & 0o7777)
}

/// Puts `data` (all keys, or the listed `items`) into `out`.
#[allow(clippy::too_many_arguments)]
fn project_keys(
    out: &mut Payload,
    volume: &str,
    kind: &'static str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), VolumeError> {
    match items {
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            FileProjection {
                                data: v.clone(),
                                mode: mode(it.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::KeyNotFound {
                            volume: volume.to_string(),
                            kind,
                            what: if kind == "configmap" {
                                "config"
                            } else {
                                "secret"
                            },
                            key: it.key.clone(),
                        })
                    }
                }
            }
        }
    }
    Ok(())
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    d.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    d
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    d.extend(
        s.string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec())),
    );
    d
}

fn downward(
    out: &mut Payload,
    ctx: &EnvContext,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<(), VolumeError> {
    let first = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first().cloned())
        .unwrap_or_default();
    for it in items {
        let value = if let Some(fs) = &it.field_ref {
            crate::env::field_ref_value(ctx, fs)
        } else if let Some(rs) = &it.resource_field_ref {
            crate::env::resource_field_value(ctx, &first, rs)
        } else {
            Ok(String::new())
        }
        .map_err(|source| VolumeError::DownwardApi {
            volume: volume.to_string(),
            source,
        })?;
        out.insert(
            it.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode(it.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// The files of one volume (None: a volume without files: emptyDir, hostPath); projected
/// `serviceAccountToken` sources are skipped (see [`payload_with`]).
pub fn payload(ctx: &EnvContext, v: &Volume) -> Result<Option<Payload>, VolumeError> {
    payload_with(ctx, v, None)
}

/// The files of one volume, projected `serviceAccountToken` sources from `tokens` (fetched by
/// [`token::TokenManager::pod_tokens`]; None skips them).
pub fn payload_with(
    ctx: &EnvContext,
    v: &Volume,
    tokens: Option<&token::PodTokens>,
) -> Result<Option<Payload>, VolumeError> {
    let mut out = Payload::new();
    let name = v.name.as_str();
    let cm_missing = |n: &str| VolumeError::ConfigMapNotFound {
        volume: name.into(),
        name: n.into(),
    };
    let s_missing = |n: &str| VolumeError::SecretNotFound {
        volume: name.into(),
        name: n.into(),
    };
    if let Some(src) = &v.config_map {
        let optional = src.optional.unwrap_or(false);
        match ctx.config_maps.get(&src.name) {
            Some(cm) => project_keys(
                &mut out,
                name,
                "configmap",
                &config_map_data(cm),
                src.items.as_deref(),
                src.default_mode,
                optional,
            )?,
            None if optional => {}
            None => return Err(cm_missing(&src.name)),
        }
    } else if let Some(src) = &v.secret {
        let optional = src.optional.unwrap_or(false);
        let sname = src.secret_name.as_deref().unwrap_or_default();
        match ctx.secrets.get(sname) {
            Some(s) => project_keys(
                &mut out,
                name,
                "secret",
                &secret_data(s),
                src.items.as_deref(),
                src.default_mode,
                optional,
            )?,
            None if optional => {}
            None => return Err(s_missing(sname)),
        }
    } else if let Some(src) = &v.downward_api {
        downward(
            &mut out,
            ctx,
            name,
            src.items.as_deref().unwrap_or_default(),
            src.default_mode,
        )?;
    } else if let Some(src) = &v.projected {
        let dm = src.default_mode;
        for p in src.sources.iter().flatten() {
            if let Some(cm) = &p.config_map {
                let optional = cm.optional.unwrap_or(false);
                match ctx.config_maps.get(&cm.name) {
                    Some(obj) => project_keys(
                        &mut out,
                        name,
                        "configmap",
                        &config_map_data(obj),
                        cm.items.as_deref(),
                        dm,
                        optional,
                    )?,
                    None if optional => {}
                    None => return Err(cm_missing(&cm.name)),
                }
            }
            if let Some(s) = &p.secret {
                let optional = s.optional.unwrap_or(false);
                match ctx.secrets.get(&s.name) {
                    Some(obj) => project_keys(
                        &mut out,
                        name,
                        "secret",
                        &secret_data(obj),
                        s.items.as_deref(),
                        dm,
                        optional,
                    )?,
                    None if optional => {}
                    None => return Err(s_missing(&s.name)),
                }
            }
            if let Some(d) = &p.downward_api {
                downward(
                    &mut out,
                    ctx,
                    name,
                    d.items.as_deref().unwrap_or_default(),
                    dm,
                )?;
            }
            if let Some(t) = &p.service_account_token {
                let Some(tokens) = tokens else {
                    tracing::debug!(volume = %name, "serviceAccountToken projection skipped");
                    continue;
                };
                let token = tokens
                    .get(&(name.to_string(), t.path.clone()))
                    .ok_or_else(|| VolumeError::TokenMissing {
                        volume: name.into(),
                        path: t.path.clone(),
                    })?;
                out.insert(
                    t.path.clone(),
                    FileProjection {
                        data: token.clone().into_bytes(),
                        mode: token::token_mode(ctx.pod, dm),
                    },
                );
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Writes every volume of the pod under `pods_root` (idempotent: unchanged content is left
/// alone, changed content swaps `..data`). emptyDirs get their (marker) directory. Token
/// projections are skipped; [`prepare_with_tokens`] writes them.
pub fn prepare(pods_root: &Path, ctx: &EnvContext) -> Result<(), VolumeError> {
    prepare_inner(pods_root, ctx, None)
}

/// [`prepare`], with the pod's ServiceAccount tokens written to their projections' paths (a
/// refreshed token swaps `..data` like any changed content).
pub fn prepare_with_tokens(
    pods_root: &Path,
    ctx: &EnvContext,
    tokens: &token::PodTokens,
) -> Result<(), VolumeError> {
    prepare_inner(pods_root, ctx, Some(tokens))
}

fn prepare_inner(
    pods_root: &Path,
    ctx: &EnvContext,
    tokens: Option<&token::PodTokens>,
) -> Result<(), VolumeError> {
    let uid = ctx.pod.metadata.uid.as_deref().unwrap_or_default();
    for v in volumes(ctx.pod) {
        let Some(plugin) = plugin(v)? else { continue };
        if plugin == disk::PLUGIN {
            // Laid out by [`prepare_disk`], from the claim and its PV.
            continue;
        }
        let dir = volume_dir(pods_root, uid, plugin, &v.name);
        let write_err = |source| VolumeError::Write {
            volume: v.name.clone(),
            source,
        };
        match payload_with(ctx, v, tokens)? {
            Some(p) => {
                writer::write(&dir, &p).map_err(write_err)?;
            }
            None => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    write_err(WriterError::Io {
                        op: format!("creating {}", dir.display()),
                        source: e,
                    })
                })?;
            }
        }
    }
    Ok(())
}

/// Lays out the PersistentVolume-backed volume `v` of the pod `uid` as [`disk`] describes:
/// creates the image as `plan` says, then writes the descriptor (`readOnly` when the claim
/// source or the PV source is read-only). Returns the volume's directory.
pub fn prepare_disk(
    pods_root: &Path,
    uid: &str,
    v: &Volume,
    pv_name: &str,
    plan: &disk::DiskPlan,
) -> Result<PathBuf, VolumeError> {
    let wrap = |source| VolumeError::Disk {
        volume: v.name.clone(),
        source,
    };
    disk::realize(pv_name, plan).map_err(wrap)?;
    let claim_ro = v
        .persistent_volume_claim
        .as_ref()
        .and_then(|c| c.read_only)
        .unwrap_or(false);
    let dir = volume_dir(pods_root, uid, disk::PLUGIN, &v.name);
    let desc = disk::DiskDescriptor {
        image: plan.image.display().to_string(),
        fs_type: plan.fs_type.clone(),
        read_only: claim_ro || plan.read_only,
    };
    disk::write_descriptor(&dir, &desc).map_err(wrap)?;
    Ok(dir)
}

/// The CRI mounts of a container's `volumeMounts` (host paths as [`prepare`] lays them out;
/// subPath resolved to the file or directory inside the volume, as kubelet does).
pub fn mounts(pods_root: &Path, pod: &Pod, c: &Container) -> Result<Vec<cri::Mount>, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let v = volumes(pod)
            .iter()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| VolumeError::NoVolume {
                container: c.name.clone(),
                name: vm.name.clone(),
            })?;
        if vm.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(VolumeError::MountUnsupported {
                container: c.name.clone(),
                name: vm.name.clone(),
                what: "subPathExpr",
            });
        }
        let (base, always_ro) = match plugin(v)? {
            None => (
                PathBuf::from(
                    v.host_path
                        .as_ref()
                        .map(|h| h.path.clone())
                        .unwrap_or_default(),
                ),
                false,
            ),
            Some(p) if p == disk::PLUGIN => (
                volume_dir(pods_root, uid, p, &v.name),
                v.persistent_volume_claim
                    .as_ref()
                    .and_then(|c| c.read_only)
                    .unwrap_or(false),
            ),
            Some(p) => (volume_dir(pods_root, uid, p, &v.name), p != "empty-dir"),
        };
        let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => base.join(sub),
            None => base,
        };
        out.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: vm.read_only.unwrap_or(false) || always_ro,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
