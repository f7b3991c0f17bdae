//! The worker's side of volumes: fetch the ConfigMaps/Secrets a pod's volumes read and the
//! ServiceAccount tokens its projections need, lay the volumes out on the host
//! ([`crate::volume::prepare_with_tokens`]), resolve its PersistentVolumeClaims to disk images
//! ([`crate::volume::disk`]) and give each container its CRI mounts.

use std::collections::BTreeMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::api::Api;

use crate::volume::disk::{self, DiskError};
use crate::volume::VolumeError;

use super::worker::PodEnv;

/// Writes the pod's volumes and returns `c`'s mounts; the error is the FailedMount message.
pub async fn prepare(
    env: &PodEnv,
    pod: &Pod,
    c: &Container,
    pod_ips: &[String],
) -> Result<Vec<cri::Mount>, String> {
    let root = env.sandbox.logs_root.clone();
    let mounts = crate::volume::mounts(&root, pod, c).map_err(|e| e.to_string())?;
    write_all(env, pod, pod_ips).await?;
    prepare_disks(env, pod).await?;
    Ok(mounts)
}

/// Resolves each persistentVolumeClaim volume (claim → bound PV → image on this node) and lays
/// it out for kennel-cri; the error is the FailedMount message.
async fn prepare_disks(env: &PodEnv, pod: &Pod) -> Result<(), String> {
    let claims: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| (v, c)))
        .collect();
    if claims.is_empty() {
        return Ok(());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let node = Api::<Node>::all(env.client.clone())
        .get(&env.node_name)
        .await
        .map_err(|e| format!("getting node {:?}: {e}", env.node_name))?;
    let labels = node.metadata.labels.unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    for (v, src) in claims {
        let fail = |source: DiskError| {
            VolumeError::Disk {
                volume: v.name.clone(),
                source,
            }
            .to_string()
        };
        let pvc = pvcs
            .get_opt(&src.claim_name)
            .await
            .map_err(|e| e.to_string())?;
        let pv_name = disk::claim_volume(&ns, &src.claim_name, pvc.as_ref()).map_err(fail)?;
        let pv = pvs
            .get_opt(&pv_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| fail(DiskError::VolumeNotFound(pv_name.clone())))?;
        let claim_uid = pvc.and_then(|c| c.metadata.uid).unwrap_or_default();
        let plan = disk::plan(&pv, &claim_uid, &env.node_name, &labels).map_err(fail)?;
        let (root, uid, v, pv_name) = (
            env.sandbox.logs_root.clone(),
            uid.clone(),
            v.clone(),
            pv_name.clone(),
        );
        // Formatting an image is blocking file work.
        tokio::task::spawn_blocking(move || {
            crate::volume::prepare_disk(&root, &uid, &v, &pv_name, &plan)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Lays out every volume of the pod again when one of its ServiceAccount tokens is due for a
/// refresh (kubelet's 80 % / 24 h rule); the error is the FailedMount message.
pub async fn refresh_tokens(env: &PodEnv, pod: &Pod, pod_ips: &[String]) -> Result<(), String> {
    if !env.tokens.refresh_due(pod, chrono::Utc::now()) {
        return Ok(());
    }
    write_all(env, pod, pod_ips).await
}

/// Fetches what the pod's volumes read and writes them all.
async fn write_all(env: &PodEnv, pod: &Pod, pod_ips: &[String]) -> Result<(), String> {
    let root = env.sandbox.logs_root.clone();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let refs = crate::volume::referenced(pod);
    let mut config_maps = BTreeMap::new();
    let cm_api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    for name in refs.config_maps.keys() {
        if let Some(cm) = cm_api.get_opt(name).await.map_err(|e| e.to_string())? {
            config_maps.insert(name.clone(), cm);
        }
    }
    let mut secrets = BTreeMap::new();
    let s_api: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    for name in refs.secrets.keys() {
        if let Some(s) = s_api.get_opt(name).await.map_err(|e| e.to_string())? {
            secrets.insert(name.clone(), s);
        }
    }
    let tokens = env
        .tokens
        .pod_tokens(&env.client, pod)
        .await
        .map_err(|e| e.to_string())?;
    let alloc = env.allocatable.lock().expect("allocatable lock").clone();
    let host_ips = vec![env.host_ip.clone()];
    let ctx = crate::env::EnvContext {
        pod,
        node_name: &env.node_name,
        host_ips: &host_ips,
        pod_ips,
        allocatable_cpu: alloc.get("cpu"),
        allocatable_memory: alloc.get("memory"),
        allocatable_ephemeral_storage: alloc.get("ephemeral-storage"),
        config_maps: &config_maps,
        secrets: &secrets,
        services: &[],
        master_service: None,
    };
    crate::volume::prepare_with_tokens(&root, &ctx, &tokens).map_err(|e| e.to_string())
}

/// Removes the pod's volume directories (`<pods-root>/<uid>`) and its cached tokens once the
/// pod is gone.
pub fn remove(env: &PodEnv, uid: &str) {
    if uid.is_empty() {
        return;
    }
    env.tokens.forget_pod(uid);
    let dir = env.sandbox.logs_root.join(uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("removing {}: {e}", dir.display()),
    }
}
