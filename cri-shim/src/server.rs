//! The gRPC server: RuntimeService (thin handlers over [`Runtime`]) and the ImageService, on a
//! Unix socket.

use crate::convert;
use crate::image_service::{ImageServiceImpl, ImageServiceOptions};
use crate::runtime::{CriError, Runtime};
use crate::state::now_ns;
use crate::streaming::Streams;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Errors serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be prepared or bound.
    #[error("socket {path}")]
    Socket {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server")]
    Transport(#[from] tonic::transport::Error),
}

/// The RuntimeService.
#[derive(Clone)]
pub struct RuntimeServiceImpl {
    rt: Arc<Runtime>,
    streams: Option<Arc<Streams>>,
}

impl RuntimeServiceImpl {
    /// Wraps a runtime; `streams` is the streaming server Exec/Attach/PortForward register with.
    pub fn new(rt: Arc<Runtime>, streams: Option<Arc<Streams>>) -> Self {
        Self { rt, streams }
    }

    fn streams(&self) -> Result<&Streams, CriError> {
        self.streams.as_deref().ok_or_else(|| {
            CriError::Unavailable("kennel-cri runs without a streaming server".into())
        })
    }
}

/// Serves both services on `socket` (a stale socket file is replaced; mode 0600) until
/// `shutdown` resolves, without a streaming server (Exec/Attach/PortForward are Unavailable).
pub async fn serve(
    rt: Arc<Runtime>,
    image_opts: ImageServiceOptions,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_with_streaming(rt, image_opts, socket, None, shutdown).await
}

/// As [`serve`], with the streaming server whose URLs Exec/Attach/PortForward return.
pub async fn serve_with_streaming(
    rt: Arc<Runtime>,
    image_opts: ImageServiceOptions,
    socket: &Path,
    streams: Option<Arc<Streams>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let err = |source| ServerError::Socket {
        path: socket.display().to_string(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let images = ImageServiceImpl::new(rt.images.clone(), image_opts);
    tracing::info!("serving CRI on {}", socket.display());
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(RuntimeServiceImpl::new(
            rt, streams,
        )))
        .add_service(ImageServiceServer::new(images))
        .serve_with_incoming_shutdown(crate::uds::incoming(listener), shutdown)
        .await?;
    Ok(())
}

impl RuntimeServiceImpl {
    async fn sandbox_stats(&self, rec: &crate::state::SandboxRecord) -> cri::PodSandboxStats {
        let now = now_ns();
        let mut containers = Vec::new();
        for c in self.rt.state.containers_of(&rec.id) {
            let s = self.rt.container_stats(&c.id).await.ok().flatten();
            if s.is_some() {
                containers.push(convert::container_stats(&c, s.as_ref(), now));
            }
        }
        convert::pod_sandbox_stats(rec, containers, now)
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by kennel"))
}

fn ok<T>(t: T) -> Result<Response<T>, Status> {
    Ok(Response::new(t))
}

type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl RuntimeService for RuntimeServiceImpl {
    async fn version(
        &self,
        _req: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "kennel".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
        let id = self.rt.run_pod_sandbox(config, r.runtime_handler).await?;
        ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.rt
            .stop_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.rt
            .remove_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = req.into_inner();
        let rec = self
            .rt
            .state
            .sandbox(&r.pod_sandbox_id)
            .map_err(CriError::from)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {} not found", r.pod_sandbox_id)))?;
        self.rt.refresh(&rec).await;
        let rec = self
            .rt
            .state
            .sandbox(&rec.id)
            .map_err(CriError::from)?
            .unwrap_or(rec);
        let mut info = HashMap::new();
        if r.verbose {
            let vmm = rec.vmm.as_ref().map(|v| {
                serde_json::json!({
                    "pid": v.pid, "mem_mib": v.mem_mib, "from_template": v.from_template,
                    "api_socket": v.api_socket, "vsock_socket": v.vsock_socket,
                    "console": v.console, "disk_slots": v.disk_slots,
                    "volume_slots": v.volume_slots,
                })
            });
            let v = serde_json::json!({
                "vmm": vmm, "images": rec.images, "volumes": rec.volumes, "runtime": "kennel",
                "state_dir": self.rt.state.sandbox_dir(&rec.id),
                "hostname": crate::sandbox::hostname(&rec.config),
            });
            info.insert("info".to_string(), v.to_string());
        }
        ok(cri::PodSandboxStatusResponse {
            status: Some(convert::pod_sandbox_status(&rec)),
            info,
            containers_statuses: vec![],
            timestamp: now_ns(),
        })
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let f = req.into_inner().filter;
        for rec in self.rt.state.sandboxes() {
            self.rt.refresh(&rec).await;
        }
        let items = self
            .rt
            .state
            .sandboxes()
            .iter()
            .filter(|s| convert::sandbox_matches(s, f.as_ref()))
            .map(convert::pod_sandbox)
            .collect();
        ok(cri::ListPodSandboxResponse { items })
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
        let id = self.rt.create_container(&r.pod_sandbox_id, config).await?;
        ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.rt
            .start_container(&req.into_inner().container_id)
            .await?;
        ok(cri::StartContainerResponse {})
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = req.into_inner();
        self.rt.stop_container(&r.container_id, r.timeout).await?;
        ok(cri::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.rt
            .remove_container(&req.into_inner().container_id)
            .await?;
        ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let f = req.into_inner().filter;
        for rec in self.rt.state.sandboxes() {
            self.rt.refresh(&rec).await;
        }
        let containers = self
            .rt
            .state
            .containers()
            .iter()
            .filter(|c| convert::container_matches(c, f.as_ref()))
            .map(convert::container)
            .collect();
        ok(cri::ListContainersResponse { containers })
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = req.into_inner();
        let find = || {
            self.rt
                .state
                .container(&r.container_id)
                .map_err(CriError::from)?
                .ok_or_else(|| {
                    CriError::NotFound(format!("container {} not found", r.container_id))
                })
        };
        let c = find()?;
        if let Ok(Some(s)) = self.rt.state.sandbox(&c.sandbox_id) {
            self.rt.refresh(&s).await;
        }
        let c = find()?;
        let mut info = HashMap::new();
        if r.verbose {
            let v = serde_json::json!({"sandboxID": c.sandbox_id, "runtime": "kennel", "config": c.config});
            info.insert("info".to_string(), v.to_string());
        }
        ok(cri::ContainerStatusResponse {
            status: Some(convert::container_status(&c)),
            info,
        })
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let r = req.into_inner();
        self.rt
            .update_container_resources(&r.container_id, r.linux)
            .await?;
        ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.rt
            .reopen_container_log(&req.into_inner().container_id)?;
        ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let r = req.into_inner();
        let out = self.rt.exec_sync(&r.container_id, r.cmd, r.timeout).await?;
        ok(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let pending = self.rt.prepare_exec(&req.into_inner())?;
        let url = self.streams()?.register(pending)?;
        ok(cri::ExecResponse { url })
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let pending = self.rt.prepare_attach(&req.into_inner())?;
        let url = self.streams()?.register(pending)?;
        ok(cri::AttachResponse { url })
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let pending = self.rt.prepare_port_forward(&req.into_inner())?;
        let url = self.streams()?.register(pending)?;
        ok(cri::PortForwardResponse { url })
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        let c = self
            .rt
            .state
            .container(&id)
            .map_err(CriError::from)?
            .ok_or_else(|| CriError::NotFound(format!("container {id} not found")))?;
        let s = self.rt.container_stats(&c.id).await?;
        ok(cri::ContainerStatsResponse {
            stats: Some(convert::container_stats(&c, s.as_ref(), now_ns())),
        })
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for c in self.rt.state.containers() {
            let keep = (f.id.is_empty() || c.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                && convert::labels_match(&c.config.labels, &f.label_selector);
            if !keep {
                continue;
            }
            // A container whose agent does not answer is listed without figures.
            let s = self.rt.container_stats(&c.id).await.ok().flatten();
            stats.push(convert::container_stats(&c, s.as_ref(), now_ns()));
        }
        ok(cri::ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let rec = self
            .rt
            .state
            .sandbox(&id)
            .map_err(CriError::from)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {id} not found")))?;
        ok(cri::PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&rec).await),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for rec in self.rt.state.sandboxes() {
            if (f.id.is_empty() || rec.id.starts_with(&f.id))
                && convert::labels_match(&rec.config.labels, &f.label_selector)
            {
                stats.push(self.sandbox_stats(&rec).await);
            }
        }
        ok(cri::ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            // Recorded and reported; the node network keeps the CIDR it was set up with
            // (--pod-cidr) until restart.
            *self
                .rt
                .pod_cidr_update
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(cidr);
        }
        ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let net = &self.rt.network;
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: net.is_ok(),
                reason: if net.is_ok() {
                    String::new()
                } else {
                    "NetworkSetupFailed".into()
                },
                message: net.as_ref().err().cloned().unwrap_or_default(),
            },
        ];
        let mut info = HashMap::new();
        if req.into_inner().verbose {
            let o = &self.rt.opts;
            let update = self
                .rt
                .pod_cidr_update
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let v = serde_json::json!({
                "stateDir": o.state_dir, "podCIDR": o.pod_cidr, "podCIDRFromKubelet": update,
                "bridge": o.bridge, "vmm": o.vm.vmm, "kernel": o.vm.kernel,
                "initramfs": o.vm.initramfs, "templateCache": o.vm.template_cache,
                "diskSlots": o.vm.disk_slots, "cgroupDriver": "cgroupfs",
                "sandboxes": self.rt.state.sandboxes().len(),
                "containers": self.rt.state.containers().len(),
            });
            info.insert("config".to_string(), v.to_string());
        }
        ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![],
            features: None,
        })
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(unimplemented("CheckpointContainer"))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(unimplemented("GetContainerEvents (evented PLEG)"))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(unimplemented("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(unimplemented("ListPodSandboxMetrics"))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        // kennel places VMMs in cgroups by path (cgroupfs names), not through systemd.
        ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}
