//! Persistent volume disks of a sandbox ([`crate::pvdisk`] is the contract): attached once per
//! sandbox and image to a free slot (read-write volume slot; a read-only image slot for a
//! read-only claim), mounted by the agent at `/run/kennel/pv/<serial>`, bound into containers
//! (at their subPath, created in the guest when missing), and synced and unmounted before the
//! VM ends.

use crate::pvdisk::{self, DiskDescriptor};
use crate::runtime::{agent_error, CriError, Runtime};
use crate::state::{AttachedVolume, SandboxRecord, VmmInfo};
use crate::vm::{self, VmError};
use agent_proto::pb;
use std::path::Path;
use std::time::Duration;

/// How long the agent has to sync and unmount one volume before the VM is destroyed.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// The slot a new volume disk goes to, or the error naming the limit.
pub fn free_slot(
    sandbox: &SandboxRecord,
    vmm: &VmmInfo,
    disk: &DiskDescriptor,
    volume: &str,
) -> Result<usize, CriError> {
    let used = |s: &usize| {
        sandbox.images.iter().any(|a| a.slot == *s) || sandbox.volumes.iter().any(|v| v.slot == *s)
    };
    let (range, what) = if disk.read_only {
        (0..vmm.disk_slots, "read-only disk slots (--disk-slots)")
    } else {
        (
            vmm.disk_slots..vmm.disk_slots + vmm.volume_slots,
            "read-write volume slots (--volume-slots)",
        )
    };
    let total = range.len();
    range.into_iter().find(|s| !used(s)).ok_or_else(|| {
        CriError::FailedPrecondition(format!(
            "sandbox {}: volume {volume:?} cannot be attached: all {total} {what} of its VM are in use",
            sandbox.id
        ))
    })
}

/// A refused `attach_disk` as a CRI error: an image in use by another VM is a
/// FailedPrecondition that says so.
fn attach_error(volume: &str, e: VmError) -> CriError {
    match &e {
        VmError::Api { reason, .. } if reason.contains("in use by another VM") => {
            CriError::FailedPrecondition(format!("volume {volume:?}: {reason}"))
        }
        _ => CriError::Unavailable(format!("volume {volume:?}: {}", crate::runtime::chain(&e))),
    }
}

impl Runtime {
    /// Attaches and mounts a volume's disk in the sandbox VM, once per image (the caller holds
    /// the sandbox lock). Returns the attachment.
    pub(crate) async fn attach_volume(
        &self,
        sandbox_id: &str,
        volume: &str,
        disk: &DiskDescriptor,
    ) -> Result<AttachedVolume, CriError> {
        let sandbox = self
            .state
            .sandbox(sandbox_id)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {sandbox_id} not found")))?;
        if let Some(v) = sandbox.volumes.iter().find(|v| v.image == disk.image) {
            return Ok(v.clone());
        }
        let vmm = sandbox.vmm.clone().ok_or_else(|| {
            CriError::FailedPrecondition(format!("sandbox {sandbox_id} has no running VM"))
        })?;
        let slot = free_slot(&sandbox, &vmm, disk, volume)?;
        let serial = pvdisk::serial_for(&disk.image);
        vm::attach_disk(&vmm.api_socket, slot, &disk.image, &serial)
            .await
            .map_err(|e| attach_error(volume, e))?;
        let mount_point = pvdisk::guest_mount_point(&serial);
        let mut agent = self.agent(sandbox_id).await?;
        let mounted = agent
            .mount_storage(pb::MountStorageRequest {
                serial: serial.clone(),
                mount_point: mount_point.clone(),
                fstype: disk.fs_type.clone(),
                readonly: disk.read_only,
                options: String::new(),
            })
            .await;
        if let Err(s) = mounted {
            // Let go of the image (and its lock) so another pod, or a retry, can have it.
            if let Err(e) = vm::detach_disk(&vmm.api_socket, slot).await {
                tracing::warn!("sandbox {sandbox_id}: detaching volume {volume:?}: {e}");
            }
            return Err(agent_error(
                &format!(
                    "MountStorage of volume {volume:?} ({})",
                    disk.image.display()
                ),
                s,
            ));
        }
        let attached = AttachedVolume {
            slot,
            image: disk.image.clone(),
            serial,
            mount_point,
            fs_type: disk.fs_type.clone(),
            read_only: disk.read_only,
        };
        let a = attached.clone();
        self.state
            .update_sandbox(sandbox_id, move |r| r.volumes.push(a))?;
        tracing::info!(
            "sandbox {sandbox_id}: volume {volume:?} ({}) on disk slot {slot} at {}",
            disk.image.display(),
            attached.mount_point
        );
        Ok(attached)
    }

    /// The guest bind source of a volume mount: the disk's mount point, or the subPath inside
    /// it (created when missing, as kubelet does).
    pub(crate) async fn volume_source(
        &self,
        agent: &mut agent_proto::AgentClient,
        attached: &AttachedVolume,
        volume: &str,
        sub: &Path,
    ) -> Result<String, CriError> {
        if sub.as_os_str().is_empty() {
            return Ok(attached.mount_point.clone());
        }
        if attached.read_only {
            // Nothing can be created on a read-only disk: the subPath must exist.
            return Ok(format!("{}/{}", attached.mount_point, sub.display()));
        }
        let r = agent
            .ensure_storage_dir(pb::EnsureStorageDirRequest {
                mount_point: attached.mount_point.clone(),
                sub_path: sub.display().to_string(),
            })
            .await
            .map_err(|s| agent_error(&format!("subPath of volume {volume:?}"), s))?;
        Ok(r.into_inner().path)
    }

    /// Syncs and unmounts every volume disk of a sandbox in the guest, so what containers wrote
    /// is on the host files before the VM ends. Best effort (a VM that does not answer is
    /// a power cut: ext4's journal recovers at the next mount).
    pub(crate) async fn unmount_volumes(&self, rec: &SandboxRecord) {
        if rec.volumes.is_empty() {
            return;
        }
        let agent = tokio::time::timeout(UNMOUNT_TIMEOUT, self.agent(&rec.id)).await;
        let Ok(Ok(mut agent)) = agent else {
            tracing::warn!(
                "sandbox {}: agent unreachable; volumes not unmounted before the VM ends",
                rec.id
            );
            return;
        };
        for v in &rec.volumes {
            let req = pb::UnmountStorageRequest {
                mount_point: v.mount_point.clone(),
            };
            match tokio::time::timeout(UNMOUNT_TIMEOUT, agent.unmount_storage(req)).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    tracing::info!(
                        "sandbox {}: volume {} synced and unmounted (was mounted: {}, lazily: {})",
                        rec.id,
                        v.image.display(),
                        r.was_mounted,
                        r.detached_lazily
                    );
                }
                Ok(Err(s)) => tracing::warn!(
                    "sandbox {}: unmounting volume {}: {}",
                    rec.id,
                    v.image.display(),
                    s.message()
                ),
                Err(_) => tracing::warn!(
                    "sandbox {}: unmounting volume {}: no answer within {UNMOUNT_TIMEOUT:?}",
                    rec.id,
                    v.image.display()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AttachedImage, SandboxState};

    fn sandbox() -> (SandboxRecord, VmmInfo) {
        let vmm = VmmInfo {
            pid: 1,
            start_time: 1,
            api_socket: "/a".into(),
            vsock_socket: "/v".into(),
            console: "/c".into(),
            mem_mib: 128,
            from_template: true,
            disk_slots: 2,
            volume_slots: 2,
        };
        let rec = SandboxRecord {
            id: "s1".into(),
            config: Default::default(),
            runtime_handler: String::new(),
            state: SandboxState::Ready,
            created_at: 0,
            ip: None,
            vmm: Some(vmm.clone()),
            images: vec![AttachedImage {
                slot: 0,
                image_id: "i".into(),
                serial: "img-i".into(),
                mount_point: "/m".into(),
            }],
            volumes: vec![],
        };
        (rec, vmm)
    }

    fn disk(read_only: bool) -> DiskDescriptor {
        DiskDescriptor {
            image: "/pv/a.img".into(),
            fs_type: "ext4".into(),
            read_only,
        }
    }

    fn attached(slot: usize) -> AttachedVolume {
        AttachedVolume {
            slot,
            image: format!("/pv/{slot}.img").into(),
            serial: "pv".into(),
            mount_point: "/run/kennel/pv/pv".into(),
            fs_type: "ext4".into(),
            read_only: false,
        }
    }

    #[test]
    fn read_write_volumes_take_volume_slots_until_none_is_left() {
        let (mut rec, vmm) = sandbox();
        assert_eq!(free_slot(&rec, &vmm, &disk(false), "data").unwrap(), 2);
        rec.volumes.push(attached(2));
        assert_eq!(free_slot(&rec, &vmm, &disk(false), "data").unwrap(), 3);
        rec.volumes.push(attached(3));
        let e = free_slot(&rec, &vmm, &disk(false), "data").unwrap_err();
        assert!(matches!(e, CriError::FailedPrecondition(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("all 2 read-write volume slots (--volume-slots)"),
            "{msg}"
        );
        assert!(msg.contains("\"data\""), "{msg}");
    }

    #[test]
    fn read_only_claims_share_the_image_slots() {
        let (mut rec, vmm) = sandbox();
        assert_eq!(free_slot(&rec, &vmm, &disk(true), "ro").unwrap(), 1);
        rec.volumes.push(attached(1));
        let e = free_slot(&rec, &vmm, &disk(true), "ro").unwrap_err();
        assert!(e.to_string().contains("--disk-slots"), "{e}");
    }

    #[test]
    fn an_old_vm_without_volume_slots_says_so() {
        let (rec, mut vmm) = sandbox();
        vmm.volume_slots = 0;
        let e = free_slot(&rec, &vmm, &disk(false), "data").unwrap_err();
        assert!(
            e.to_string().contains("all 0 read-write volume slots"),
            "{e}"
        );
    }

    #[test]
    fn an_image_in_use_is_a_failed_precondition() {
        let e = attach_error(
            "data",
            VmError::Api {
                socket: "/a".into(),
                reason: "disk image /pv/a.img is in use by another VM".into(),
            },
        );
        assert!(matches!(e, CriError::FailedPrecondition(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "volume \"data\": disk image /pv/a.img is in use by another VM"
        );
        let e = attach_error(
            "data",
            VmError::Api {
                socket: "/a".into(),
                reason: "connection refused".into(),
            },
        );
        assert!(matches!(e, CriError::Unavailable(_)), "{e}");
    }
}
