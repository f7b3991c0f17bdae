//! The gRPC service: thin handlers that validate, call the subsystem, and map its errors
//! to specific statuses.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::pb::{self, agent_server::Agent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::container::plan::RootfsInput;
use crate::container::stdio::Reader;
use crate::container::{ContainerError, Containers};
use crate::files::{self, FilesError};
use crate::reaper::Exit;
use crate::sandbox::{self, SandboxError};
use crate::storage::{self, BlockPaths, StorageError};

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::OutputChunk, Status>> + Send>>;
type Ooms = Pin<Box<dyn Stream<Item = Result<pb::OomEvent, Status>> + Send>>;

/// What the service asks the main loop to do after DestroySandbox.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown;

/// The agent service.
pub struct AgentService {
    /// Containers of the sandbox.
    pub containers: Arc<Containers>,
    /// Sandbox file locations.
    pub sandbox_paths: sandbox::Paths,
    /// Block device locations.
    pub block_paths: BlockPaths,
    /// Where copied volumes and emptyDirs live.
    pub volume_roots: files::Roots,
    /// Told once DestroySandbox has cleaned up.
    pub shutdown: mpsc::Sender<Shutdown>,
}

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Self {
        let msg = error_chain(&e);
        match e {
            ContainerError::NotFound(_) => Status::not_found(msg),
            ContainerError::AlreadyExists(_) => Status::already_exists(msg),
            ContainerError::InvalidArgument(_) => Status::invalid_argument(msg),
            ContainerError::FailedPrecondition(_) => Status::failed_precondition(msg),
            ContainerError::Setup(_) => Status::failed_precondition(msg),
            ContainerError::Cgroup(_) | ContainerError::Io { .. } => Status::internal(msg),
        }
    }
}

impl From<SandboxError> for Status {
    fn from(e: SandboxError) -> Self {
        let msg = error_chain(&e);
        match e {
            SandboxError::InvalidArgument { .. } => Status::invalid_argument(msg),
            SandboxError::NotFound(_) => Status::not_found(msg),
            SandboxError::Io { .. } => Status::internal(msg),
        }
    }
}

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Self {
        let msg = error_chain(&e);
        match e {
            StorageError::InvalidArgument { .. } => Status::invalid_argument(msg),
            StorageError::NotFound(_) => Status::not_found(msg),
            StorageError::Io { .. } => Status::internal(msg),
        }
    }
}

impl From<FilesError> for Status {
    fn from(e: FilesError) -> Self {
        let msg = error_chain(&e);
        match e {
            FilesError::InvalidArgument { .. } => Status::invalid_argument(msg),
            FilesError::Io { .. } => Status::internal(msg),
        }
    }
}

/// "outer: inner: root cause".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn chunks(
    rx: Option<mpsc::Receiver<Vec<u8>>>,
    what: &str,
    put_back: impl FnOnce(mpsc::Receiver<Vec<u8>>) + Send + 'static,
) -> Result<Chunks, Status> {
    let rx =
        rx.ok_or_else(|| Status::failed_precondition(format!("{what} is already attached")))?;
    Ok(Box::pin(
        Reader::new(rx, put_back).map(|data| Ok(pb::OutputChunk { data })),
    ))
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = req.into_inner();
        let paths = self.sandbox_paths.clone();
        tokio::task::spawn_blocking(move || sandbox::create(&req, &paths))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::Empty {}))
    }

    async fn mount_storage(
        &self,
        req: Request<pb::MountStorageRequest>,
    ) -> Result<Response<pb::MountStorageResponse>, Status> {
        let r = req.into_inner();
        let dev = storage::mount_storage(
            &self.block_paths,
            &r.serial,
            &r.mount_point,
            &r.fstype,
            r.readonly,
            &r.options,
            Duration::from_secs(10),
        )
        .await?;
        Ok(Response::new(pb::MountStorageResponse {
            device: dev.display().to_string(),
        }))
    }

    async fn put_files(
        &self,
        req: Request<pb::PutFilesRequest>,
    ) -> Result<Response<pb::GuestPathResponse>, Status> {
        let req = req.into_inner();
        let roots = self.volume_roots.clone();
        let path = tokio::task::spawn_blocking(move || files::put_files(&roots, &req))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::GuestPathResponse {
            path: path.display().to_string(),
        }))
    }

    async fn ensure_empty_dir(
        &self,
        req: Request<pb::EnsureEmptyDirRequest>,
    ) -> Result<Response<pb::GuestPathResponse>, Status> {
        let name = req.into_inner().name;
        let roots = self.volume_roots.clone();
        let path = tokio::task::spawn_blocking(move || files::ensure_empty_dir(&roots, &name))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::GuestPathResponse {
            path: path.display().to_string(),
        }))
    }

    async fn create_container(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let rootfs = r.rootfs.unwrap_or_default();
        let input = RootfsInput {
            lower_dirs: rootfs.lower_dirs.iter().map(Into::into).collect(),
            readonly: rootfs.readonly,
        };
        let pid = self
            .containers
            .create(&r.container_id, &r.oci_spec_json, input, r.tty)
            .await?;
        Ok(Response::new(pb::CreateContainerResponse {
            pid: pid as u32,
        }))
    }

    async fn start_container(
        &self,
        req: Request<pb::ContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.containers
            .start(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn exec_process(
        &self,
        req: Request<pb::ExecProcessRequest>,
    ) -> Result<Response<pb::ExecProcessResponse>, Status> {
        let r = req.into_inner();
        let pid = self
            .containers
            .exec(&r.container_id, &r.exec_id, &r.oci_process_json)
            .await?;
        Ok(Response::new(pb::ExecProcessResponse { pid: pid as u32 }))
    }

    async fn wait_process(
        &self,
        req: Request<pb::ProcessRequest>,
    ) -> Result<Response<pb::WaitProcessResponse>, Status> {
        let r = req.into_inner();
        let w = self.containers.wait(&r.container_id, &r.exec_id).await?;
        let (exit_code, signal) = match w.exit {
            Exit::Code(c) => (c, 0),
            Exit::Signal(s) => (128 + s, s),
        };
        Ok(Response::new(pb::WaitProcessResponse {
            exit_code,
            signal,
            oom_killed: w.oom_killed,
        }))
    }

    async fn signal_process(
        &self,
        req: Request<pb::SignalProcessRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        self.containers
            .signal(&r.container_id, &r.exec_id, r.signal, r.all)?;
        Ok(Response::new(pb::Empty {}))
    }

    type ReadStdoutStream = Chunks;

    async fn read_stdout(
        &self,
        req: Request<pb::ProcessRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let r = req.into_inner();
        let p = self.containers.process(&r.container_id, &r.exec_id)?;
        let rx = p.stdio.stdout.lock().await.take();
        let put_back = move |rx| {
            tokio::spawn(async move {
                p.stdio.stdout.lock().await.get_or_insert(rx);
            });
        };
        Ok(Response::new(chunks(rx, "stdout", put_back)?))
    }

    type ReadStderrStream = Chunks;

    async fn read_stderr(
        &self,
        req: Request<pb::ProcessRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let r = req.into_inner();
        let p = self.containers.process(&r.container_id, &r.exec_id)?;
        let rx = p.stdio.stderr.lock().await.take();
        let put_back = move |rx| {
            tokio::spawn(async move {
                p.stdio.stderr.lock().await.get_or_insert(rx);
            });
        };
        Ok(Response::new(chunks(rx, "stderr", put_back)?))
    }

    async fn write_stdin(
        &self,
        req: Request<pb::WriteStdinRequest>,
    ) -> Result<Response<pb::WriteStdinResponse>, Status> {
        let r = req.into_inner();
        let p = self.containers.process(&r.container_id, &r.exec_id)?;
        match p.stdio.write(&r.data).await {
            Ok(true) => Ok(Response::new(pb::WriteStdinResponse {
                written: r.data.len() as u32,
            })),
            Ok(false) => Err(Status::failed_precondition("stdin is closed")),
            Err(e) => Err(Status::failed_precondition(format!("writing stdin: {e}"))),
        }
    }

    async fn close_stdin(
        &self,
        req: Request<pb::ProcessRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let p = self.containers.process(&r.container_id, &r.exec_id)?;
        p.stdio.close_stdin().await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn resize_tty(
        &self,
        req: Request<pb::ResizeTtyRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let p = self.containers.process(&r.container_id, &r.exec_id)?;
        let Some(master) = p.stdio.tty.as_ref() else {
            return Err(Status::failed_precondition("process has no terminal"));
        };
        let rows =
            u16::try_from(r.rows).map_err(|_| Status::invalid_argument("rows: too large"))?;
        let cols =
            u16::try_from(r.cols).map_err(|_| Status::invalid_argument("cols: too large"))?;
        use std::os::fd::AsRawFd;
        crate::sys::ioctl::set_winsize(master.as_raw_fd(), rows, cols)
            .map_err(|e| Status::internal(format!("resizing the terminal: {e}")))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn update_container(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        self.containers
            .update(&r.container_id, &r.oci_resources_json)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn stats_container(
        &self,
        req: Request<pb::ContainerRequest>,
    ) -> Result<Response<pb::StatsContainerResponse>, Status> {
        let s = self.containers.stats(&req.into_inner().container_id)?;
        Ok(Response::new(pb::StatsContainerResponse {
            cpu_usage_nanos: s.cpu_nanos,
            memory_usage_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit,
            pids_current: s.pids,
            oom_kills: s.oom_kills,
        }))
    }

    type GetOomEventsStream = Ooms;

    async fn get_oom_events(&self, _: Request<pb::Empty>) -> Result<Response<Ooms>, Status> {
        let rx = self.containers.oom_events();
        let stream = BroadcastStream::new(rx)
            .filter_map(|r| r.ok().map(|container_id| Ok(pb::OomEvent { container_id })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn remove_container(
        &self,
        req: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.containers
            .remove(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn destroy_sandbox(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        self.containers.remove_all().await;
        let _ = self.shutdown.try_send(Shutdown);
        Ok(Response::new(pb::Empty {}))
    }

    async fn unmount_storage(
        &self,
        req: Request<pb::UnmountStorageRequest>,
    ) -> Result<Response<pb::UnmountStorageResponse>, Status> {
        let mp = req.into_inner().mount_point;
        let done = tokio::task::spawn_blocking(move || storage::unmount_storage(&mp))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::UnmountStorageResponse {
            was_mounted: done != storage::UnmountOutcome::NotMounted,
            detached_lazily: done == storage::UnmountOutcome::Detached,
        }))
    }

    async fn ensure_storage_dir(
        &self,
        req: Request<pb::EnsureStorageDirRequest>,
    ) -> Result<Response<pb::GuestPathResponse>, Status> {
        let r = req.into_inner();
        let path = tokio::task::spawn_blocking(move || {
            storage::ensure_storage_dir(&r.mount_point, &r.sub_path)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::GuestPathResponse {
            path: path.display().to_string(),
        }))
    }

    async fn health(&self, _: Request<pb::Empty>) -> Result<Response<pb::HealthResponse>, Status> {
        Ok(Response::new(pb::HealthResponse { serving: true }))
    }

    async fn version(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: agent_proto::PROTOCOL_VERSION,
        }))
    }
}
