//! Containers: create (image disk attached and mounted, OCI spec to the agent, log pumps),
//! start, remove, exec, stats, log reopening, and the waiter that records exits (stopping is
//! in [`crate::stop`]).

use crate::image_service::image_ref_for;
use crate::logs::{CriLogWriter, LogStream};
use crate::oci;
use crate::runtime::{agent_error, chain, CriError, Runtime};
use crate::state::{new_id, now_ns, AttachedImage, ContainerRecord, ContainerState, SandboxState};
use crate::vm;
use crate::volumes::{self, GuestMount};
use agent_proto::pb;
use k8s_cri::v1::ContainerConfig;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most bytes of each of stdout and stderr ExecSync returns.
pub const EXEC_OUTPUT_CAP: usize = 16 << 20;
/// Exit code reported for an ExecSync that ran out of time (as containerd's shims do).
pub const EXEC_TIMEOUT_EXIT: i32 = 137;

/// Output of an ExecSync.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// Stdout (capped).
    pub stdout: Vec<u8>,
    /// Stderr (capped).
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
}

fn container_name(c: &ContainerConfig) -> String {
    c.metadata
        .as_ref()
        .map(|m| format!("{}_{}", m.name, m.attempt))
        .unwrap_or_default()
}

/// Checks a CreateContainer config.
pub fn validate_config(c: Option<&ContainerConfig>) -> Result<&ContainerConfig, CriError> {
    let c = c.ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
    let m = c
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::InvalidArgument("config.metadata is required".into()))?;
    if m.name.is_empty() {
        return Err(CriError::InvalidArgument(
            "config.metadata.name is required".into(),
        ));
    }
    if c.image.as_ref().is_none_or(|i| i.image.is_empty()) {
        return Err(CriError::InvalidArgument(
            "config.image.image is required".into(),
        ));
    }
    // `stdin`/`stdin_once` are kept in the record's config and read by Attach.
    Ok(c)
}

/// Puts the mounts' content into the guest (copies, emptyDirs, volume disks) and returns their
/// OCI binds.
async fn guest_mounts(
    rt: &Runtime,
    sandbox_id: &str,
    agent: &mut agent_proto::AgentClient,
    plans: Vec<GuestMount>,
    container: &str,
) -> Result<Vec<serde_json::Value>, CriError> {
    let mut binds = Vec::new();
    for p in plans {
        match p {
            GuestMount::Disk {
                volume,
                disk,
                sub,
                container_path,
                readonly,
            } => {
                let attached = rt.attach_volume(sandbox_id, &volume, &disk).await?;
                let source = rt.volume_source(agent, &attached, &volume, &sub).await?;
                binds.push(volumes::oci_bind(&source, &container_path, readonly));
            }
            GuestMount::Skip(why) => {
                tracing::debug!(%container, "mount not passed into the pod VM: {why}");
            }
            GuestMount::Copy {
                dir,
                files,
                file,
                container_path,
                readonly,
            } => {
                let path = agent
                    .put_files(pb::PutFilesRequest { dir, files })
                    .await
                    .map_err(|s| agent_error("PutFiles", s))?
                    .into_inner()
                    .path;
                let source = match file {
                    Some(f) => format!("{path}/{f}"),
                    None => path,
                };
                binds.push(volumes::oci_bind(&source, &container_path, readonly));
            }
            GuestMount::EmptyDir {
                name,
                sub,
                container_path,
                readonly,
            } => {
                if !sub.as_os_str().is_empty() {
                    return Err(CriError::InvalidArgument(format!(
                        "subPath {:?} of emptyDir {name:?}: subPaths of emptyDirs are not supported in pod VMs yet",
                        sub.display()
                    )));
                }
                let source = agent
                    .ensure_empty_dir(pb::EnsureEmptyDirRequest { name })
                    .await
                    .map_err(|s| agent_error("EnsureEmptyDir", s))?
                    .into_inner()
                    .path;
                binds.push(volumes::oci_bind(&source, &container_path, readonly));
            }
        }
    }
    Ok(binds)
}

fn serial_for(image_id: &str) -> String {
    let hex = image_id.trim_start_matches("sha256:");
    format!("img-{}", &hex[..16.min(hex.len())])
}

impl Runtime {
    /// CreateContainer: returns the new container id.
    pub async fn create_container(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String, CriError> {
        validate_config(Some(&config))?;
        let sandbox = self
            .state
            .sandbox(sandbox_id)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {sandbox_id} not found")))?;
        if sandbox.state != SandboxState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sandbox.id
            )));
        }
        let name = container_name(&config);
        if !config.devices.is_empty() {
            // No device passthrough into the pod VM yet: say so rather than drop them unseen.
            tracing::warn!(
                container = %name,
                devices = config.devices.len(),
                "host devices are not passed into the pod VM; the container runs without them"
            );
        }
        let mounts = config.mounts.clone();
        let plans = tokio::task::spawn_blocking(move || {
            mounts
                .iter()
                .map(volumes::plan)
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| CriError::Internal(e.to_string()))?
        .map_err(|e| match e {
            volumes::VolumeError::Refused(m) => CriError::InvalidArgument(m),
            volumes::VolumeError::Read(m) => CriError::Internal(m),
        })?;
        if let Some(other) = self
            .state
            .containers_of(&sandbox.id)
            .into_iter()
            .find(|c| container_name(&c.config) == name)
        {
            return Err(CriError::AlreadyExists(format!(
                "container name {name:?} is reserved for {}",
                other.id
            )));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let store = self.images.clone();
        let image2 = image.clone();
        let image_rec = tokio::task::spawn_blocking(move || image_ref_for(&store, &image2))
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?
            .map_err(|e| CriError::Internal(format!("image {image}: {}", chain(&e))))?
            .ok_or_else(|| {
                CriError::NotFound(format!("image {image:?} is not present: pull it first"))
            })?;
        let image_config = self
            .images
            .config(&image_rec)
            .map_err(|e| CriError::Internal(format!("image config: {}", chain(&e))))?;
        let spec = oci::container_spec(
            &config,
            &image_config,
            &crate::sandbox::hostname(&sandbox.config),
        )
        .map_err(|e| CriError::InvalidArgument(e.to_string()))?;

        let lock = self.sandbox_lock(&sandbox.id);
        let _guard = lock.lock().await;
        let mount_point = self.attach_image(&sandbox.id, &image_rec).await?;
        let mut agent = self.agent(&sandbox.id).await?;
        let mut spec = spec;
        let binds = guest_mounts(self, &sandbox.id, &mut agent, plans, &name).await?;
        if let Some(m) = spec["mounts"].as_array_mut() {
            m.extend(binds);
        }
        let id = new_id();
        let spec_json = serde_json::to_vec(&spec).map_err(|e| CriError::Internal(e.to_string()))?;
        agent
            .create_container(pb::CreateContainerRequest {
                container_id: id.clone(),
                oci_spec_json: spec_json,
                rootfs: Some(pb::Rootfs {
                    lower_dirs: vec![mount_point],
                    readonly: false,
                }),
                tty: config.tty,
            })
            .await
            .map_err(|s| agent_error("CreateContainer", s))?;
        let log_path = match (
            sandbox.config.log_directory.as_str(),
            config.log_path.as_str(),
        ) {
            ("", _) | (_, "") => None,
            (dir, rel) => Some(std::path::Path::new(dir).join(rel)),
        };
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            config,
            image,
            image_ref: image_rec.id.to_string(),
            state: ContainerState::Created,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: log_path.clone(),
        };
        self.state.put_container(&rec)?;
        self.open_log(&rec);
        Ok(id)
    }

    /// Attaches the image's block disk to the sandbox VM and mounts it (once per image).
    async fn attach_image(
        &self,
        sandbox_id: &str,
        image: &images::store::ImageRecord,
    ) -> Result<String, CriError> {
        let sandbox = self
            .state
            .sandbox(sandbox_id)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {sandbox_id} not found")))?;
        let image_id = image.id.to_string();
        if let Some(a) = sandbox.images.iter().find(|a| a.image_id == image_id) {
            return Ok(a.mount_point.clone());
        }
        let vmm = sandbox.vmm.clone().ok_or_else(|| {
            CriError::FailedPrecondition(format!("sandbox {sandbox_id} has no running VM"))
        })?;
        // Read-only volume disks share these slots.
        let slot = (0..vmm.disk_slots)
            .find(|s| {
                !sandbox.images.iter().any(|a| a.slot == *s)
                    && !sandbox.volumes.iter().any(|v| v.slot == *s)
            })
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "sandbox {sandbox_id}: all {} image disk slots are in use",
                    vmm.disk_slots
                ))
            })?;
        let store = self.images.clone();
        let rec = image.clone();
        let block = tokio::task::spawn_blocking(move || store.block_image(&rec))
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?
            .map_err(|e| CriError::Internal(format!("block image: {}", chain(&e))))?;
        let serial = serial_for(&image_id);
        vm::attach_disk(&vmm.api_socket, slot, &block.path, &serial).await?;
        let mount_point = format!("/run/kennel/images/{}", &serial[4..]);
        let mut agent = self.agent(sandbox_id).await?;
        agent
            .mount_storage(pb::MountStorageRequest {
                serial: serial.clone(),
                mount_point: mount_point.clone(),
                fstype: "ext4".into(),
                readonly: true,
                options: String::new(),
            })
            .await
            .map_err(|s| agent_error("MountStorage", s))?;
        self.state.update_sandbox(sandbox_id, |r| {
            r.images.push(AttachedImage {
                slot,
                image_id: image_id.clone(),
                serial,
                mount_point: mount_point.clone(),
            })
        })?;
        Ok(mount_point)
    }

    pub(crate) fn container_rec(&self, id: &str) -> Result<ContainerRecord, CriError> {
        self.state
            .container(id)?
            .ok_or_else(|| CriError::NotFound(format!("container {id} not found")))
    }

    /// StartContainer.
    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<(), CriError> {
        let c = self.container_rec(id)?;
        if c.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                c.id, c.state
            )));
        }
        let mut agent = self.agent(&c.sandbox_id).await?;
        // Take the output streams before the process runs so nothing is lost.
        let pumps = self.attach_output(&mut agent, &c.id).await;
        agent
            .start_container(pb::ContainerRequest {
                container_id: c.id.clone(),
            })
            .await
            .map_err(|s| agent_error("StartContainer", s))?;
        self.state.update_container(&c.id, |r| {
            r.state = ContainerState::Running;
            r.started_at = now_ns();
        })?;
        self.watch_container(c.id.clone(), c.sandbox_id.clone(), Some(pumps));
        Ok(())
    }

    /// Streams a container's stdout and stderr into its CRI log file and to the attach
    /// sessions subscribed in [`crate::fanout`] (tasks end with the streams). Also used after a
    /// restart: the agent hands the streams to a new reader.
    pub(crate) async fn attach_output(
        &self,
        agent: &mut agent_proto::AgentClient,
        id: &str,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let req = pb::ProcessRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let writer = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        let mut pumps = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let s = match stream {
                LogStream::Stdout => agent.read_stdout(req.clone()).await,
                LogStream::Stderr => agent.read_stderr(req.clone()).await,
            };
            let mut s = match s {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    tracing::warn!("container {id}: {stream} not attached: {}", e.message());
                    continue;
                }
            };
            let w = writer.clone();
            let fanout = self.fanout.clone();
            let id = id.to_string();
            fanout.open(&id, stream);
            pumps.push(tokio::spawn(async move {
                while let Ok(Some(chunk)) = s.message().await {
                    let data = bytes::Bytes::from(chunk.data);
                    if let Some(w) = &w {
                        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = w.write(stream, &data) {
                            tracing::warn!("log write: {}", chain(&e));
                        }
                    }
                    fanout.publish(&id, stream, &data);
                }
                fanout.end(&id, stream);
            }));
        }
        pumps
    }

    /// Opens a container's log writer (once).
    pub(crate) fn open_log(&self, c: &ContainerRecord) {
        let Some(path) = &c.log_path else { return };
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        if logs.contains_key(&c.id) {
            return;
        }
        match CriLogWriter::open(path) {
            Ok(w) => {
                logs.insert(c.id.clone(), Arc::new(Mutex::new(w)));
            }
            Err(e) => tracing::warn!("container {}: log {}: {}", c.id, path.display(), chain(&e)),
        }
    }

    /// Waits for a container's init to exit and records how it ended.
    pub(crate) fn watch_container(
        self: &Arc<Self>,
        id: String,
        sandbox_id: String,
        pumps: Option<Vec<tokio::task::JoinHandle<()>>>,
    ) {
        let rt = self.clone();
        tokio::spawn(async move {
            let Ok(mut agent) = rt.agent(&sandbox_id).await else {
                return;
            };
            let w = agent
                .wait_process(pb::ProcessRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                })
                .await;
            let Ok(w) = w.map(|r| r.into_inner()) else {
                // The VM went away; its watcher marks the containers.
                return;
            };
            let exited = tokio::time::Instant::now();
            for p in pumps.into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
            }
            tracing::debug!(
                "container {id}: exited ({}), output drained in {:?}",
                w.exit_code,
                exited.elapsed()
            );
            let writer = rt
                .logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned();
            if let Some(w) = writer {
                let _ = w.lock().unwrap_or_else(|p| p.into_inner()).flush_partial();
            }
            let _ = rt.record_exit(&id, &w);
        });
    }

    /// Drops in-memory handles of a container (log writer).
    pub(crate) fn forget_container(&self, id: &str) {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.fanout.forget(id);
    }

    /// RemoveContainer: kills it if needed, removes it from the agent and the state. Idempotent.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<(), CriError> {
        let Some(c) = self.state.container(id)? else {
            return Ok(());
        };
        if c.state == ContainerState::Running {
            self.kill_container(&c.id).await?;
        }
        let alive = matches!(self.state.sandbox(&c.sandbox_id)?, Some(s) if s.vmm.is_some());
        if alive {
            if let Ok(mut agent) = self.agent(&c.sandbox_id).await {
                match agent
                    .remove_container(pb::RemoveContainerRequest {
                        container_id: c.id.clone(),
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(agent_error("RemoveContainer", s)),
                }
            }
        }
        self.forget_container(&c.id);
        self.state.delete_container(&c.id)?;
        Ok(())
    }

    /// ExecSync: runs `cmd` in a running container, `timeout` seconds (0 = none).
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<ExecOutput, CriError> {
        if cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd is required".into()));
        }
        let c = self.container_rec(id)?;
        if c.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let mut agent = self.agent(&c.sandbox_id).await?;
        let exec_id = new_id()[..16].to_string();
        let spec = self.spec_of(&c).await;
        let process = serde_json::to_vec(&oci::exec_process(&cmd, spec.as_ref(), false))
            .map_err(|e| CriError::Internal(e.to_string()))?;
        agent
            .exec_process(pb::ExecProcessRequest {
                container_id: c.id.clone(),
                exec_id: exec_id.clone(),
                oci_process_json: process,
            })
            .await
            .map_err(|s| agent_error("ExecProcess", s))?;
        let req = pb::ProcessRequest {
            container_id: c.id.clone(),
            exec_id: exec_id.clone(),
        };
        // Collectors stop with this call: on timeout, on an error return and when the RPC
        // future is dropped (kubelet cancelled), their guards abort them and free what they
        // held (up to EXEC_OUTPUT_CAP each).
        let collect =
            |s: Result<tonic::Response<tonic::Streaming<pb::OutputChunk>>, tonic::Status>| {
                OutputCollector(tokio::spawn(async move {
                    let mut out = Vec::new();
                    if let Ok(s) = s {
                        let mut s = s.into_inner();
                        while let Ok(Some(chunk)) = s.message().await {
                            let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                            out.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
                        }
                    }
                    out
                }))
            };
        let stdout = collect(agent.read_stdout(req.clone()).await);
        let stderr = collect(agent.read_stderr(req.clone()).await);
        let wait = agent.wait_process(req);
        let waited = if timeout > 0 {
            tokio::time::timeout(Duration::from_secs(timeout as u64), wait)
                .await
                .ok()
        } else {
            Some(wait.await)
        };
        let Some(w) = waited else {
            let _ = agent
                .signal_process(pb::SignalProcessRequest {
                    container_id: c.id.clone(),
                    exec_id,
                    signal: libc::SIGKILL,
                    all: false,
                })
                .await;
            drop((stdout, stderr));
            return Err(CriError::DeadlineExceeded(format!(
                "command {cmd:?} timed out after {timeout} s"
            )));
        };
        let w = w.map_err(|s| agent_error("WaitProcess", s))?.into_inner();
        Ok(ExecOutput {
            stdout: stdout.finish(Duration::from_secs(10)).await,
            stderr: stderr.finish(Duration::from_secs(10)).await,
            exit_code: w.exit_code,
        })
    }

    /// UpdateContainerResources: new memory/CPU limits for a created or running container,
    /// written to its cgroup in the guest and kept in its record.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<k8s_cri::v1::LinuxContainerResources>,
    ) -> Result<(), CriError> {
        let r = resources
            .ok_or_else(|| CriError::InvalidArgument("linux resources are required".into()))?;
        let c = self.container_rec(id)?;
        if !matches!(c.state, ContainerState::Created | ContainerState::Running) {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let json = serde_json::to_vec(&oci::resources(Some(&r)))
            .map_err(|e| CriError::Internal(e.to_string()))?;
        let mut agent = self.agent(&c.sandbox_id).await?;
        agent
            .update_container(pb::UpdateContainerRequest {
                container_id: c.id.clone(),
                oci_resources_json: json,
            })
            .await
            .map_err(|s| agent_error("UpdateContainer", s))?;
        self.state.update_container(&c.id, |rec| {
            rec.config
                .linux
                .get_or_insert_with(Default::default)
                .resources = Some(r);
        })?;
        Ok(())
    }

    /// The OCI spec a container was created with (rebuilt from its config and image), for
    /// execs to inherit its environment and user; None when the image is gone.
    pub(crate) async fn spec_of(&self, c: &ContainerRecord) -> Option<serde_json::Value> {
        let store = self.images.clone();
        let image_ref = c.image_ref.clone();
        let image = tokio::task::spawn_blocking(move || store.resolve(&image_ref))
            .await
            .ok()?
            .ok()??;
        let image_config = self.images.config(&image).ok()?;
        let sandbox = self.state.sandbox(&c.sandbox_id).ok()??;
        oci::container_spec(
            &c.config,
            &image_config,
            &crate::sandbox::hostname(&sandbox.config),
        )
        .ok()
    }

    /// Stats of a container from its cgroup in the guest.
    pub async fn container_stats(
        &self,
        id: &str,
    ) -> Result<Option<pb::StatsContainerResponse>, CriError> {
        let c = self.container_rec(id)?;
        if c.state != ContainerState::Running {
            return Ok(None);
        }
        let mut agent = self.agent(&c.sandbox_id).await?;
        let s = agent
            .stats_container(pb::ContainerRequest {
                container_id: c.id.clone(),
            })
            .await
            .map_err(|s| agent_error("StatsContainer", s))?;
        Ok(Some(s.into_inner()))
    }

    /// ReopenContainerLog: the log file is reopened at its path (after logrotate moved it).
    pub fn reopen_container_log(&self, id: &str) -> Result<(), CriError> {
        let c = self.container_rec(id)?;
        if c.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let w = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.id)
            .cloned()
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!("container {} has no open log", c.id))
            })?;
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.reopen()
            .map_err(|e| CriError::Internal(format!("reopening log: {}", chain(&e))))
    }
}

/// An ExecSync output collector task, aborted when dropped (timeout, error, cancelled RPC) so
/// no detached task keeps reading a stream and holding its buffer.
struct OutputCollector(tokio::task::JoinHandle<Vec<u8>>);

impl OutputCollector {
    /// The output, once the stream ends within `grace`; empty otherwise (the task is aborted).
    async fn finish(mut self, grace: Duration) -> Vec<u8> {
        tokio::time::timeout(grace, &mut self.0)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default()
    }
}

impl Drop for OutputCollector {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod collector_tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_or_late_collector_is_aborted_and_frees_its_buffer() {
        for late in [false, true] {
            let held = Arc::new(vec![0u8; 1 << 20]);
            let h = held.clone();
            let c = OutputCollector(tokio::spawn(async move {
                let _h = h;
                std::future::pending::<()>().await;
                Vec::new()
            }));
            if late {
                assert!(c.finish(Duration::from_millis(10)).await.is_empty());
            } else {
                drop(c);
            }
            // The aborted task drops its state at its next poll.
            for _ in 0..100 {
                if Arc::strong_count(&held) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(
                Arc::strong_count(&held),
                1,
                "collector still alive (late={late})"
            );
        }
    }

    #[tokio::test]
    async fn a_finished_collector_returns_its_output() {
        let c = OutputCollector(tokio::spawn(async { b"out".to_vec() }));
        assert_eq!(c.finish(Duration::from_secs(5)).await, b"out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerMetadata, ImageSpec};

    #[test]
    fn config_checks_name_the_field() {
        let mut c = ContainerConfig::default();
        assert!(validate_config(Some(&c))
            .unwrap_err()
            .to_string()
            .contains("metadata"));
        c.metadata = Some(ContainerMetadata {
            name: "x".into(),
            attempt: 0,
        });
        assert!(validate_config(Some(&c))
            .unwrap_err()
            .to_string()
            .contains("config.image.image"));
        c.image = Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        });
        assert!(validate_config(Some(&c)).is_ok());
    }

    #[test]
    fn serials_fit_virtio_blk() {
        let s = serial_for("sha256:0123456789abcdef0123456789abcdef");
        assert_eq!(s, "img-0123456789abcdef");
        assert!(s.len() <= 20);
    }
}
