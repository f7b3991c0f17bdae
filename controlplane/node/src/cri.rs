//! The CRI client: RuntimeService and ImageService over the runtime's Unix socket. The channel
//! connects lazily and reconnects on its own, so a restarted runtime is picked up by the next call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Label keys kubelet puts on CRI objects; the node agent finds its pods' sandboxes and containers
/// by them, so a restarted agent adopts what is running.
pub mod labels {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's uid.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// "init" for init containers, "app" otherwise (kennel's own).
    pub const CONTAINER_KIND: &str = "io.kennel.container.kind";
}

/// Errors of a CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriClientError {
    /// The runtime answered with an error status.
    #[error("{op}: {status}")]
    Status {
        /// The CRI method.
        op: &'static str,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The runtime's answer lacked a required field.
    #[error("{0}: incomplete response")]
    Incomplete(&'static str),
}

impl CriClientError {
    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// Both CRI services on one channel.
#[derive(Clone)]
pub struct CriClient {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

type R<T> = Result<T, CriClientError>;

/// How long an ExecSync call may take beyond the command's own timeout.
const EXEC_MARGIN: Duration = Duration::from_secs(10);

fn st(op: &'static str) -> impl FnOnce(tonic::Status) -> CriClientError {
    move |status| CriClientError::Status { op, status }
}

impl CriClient {
    /// A client for the runtime at `socket` (connects on first use; every call has `timeout`).
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        let path: PathBuf = socket.to_path_buf();
        let channel = Endpoint::from_static("http://cri.invalid")
            .timeout(timeout)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Self {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
        }
    }

    /// Runtime name and version.
    pub async fn version(&self) -> R<cri::VersionResponse> {
        let mut rt = self.rt.clone();
        Ok(rt
            .version(cri::VersionRequest::default())
            .await
            .map_err(st("Version"))?
            .into_inner())
    }

    /// Runtime conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self) -> R<Vec<cri::RuntimeCondition>> {
        let mut rt = self.rt.clone();
        let s = rt
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(st("Status"))?
            .into_inner();
        Ok(s.status.map(|s| s.conditions).unwrap_or_default())
    }

    /// Sandboxes matching `labels`.
    pub async fn sandboxes(
        &self,
        labels: std::collections::HashMap<String, String>,
    ) -> R<Vec<cri::PodSandbox>> {
        let mut rt = self.rt.clone();
        Ok(rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await
            .map_err(st("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// Resource usage of every pod sandbox (with its containers').
    pub async fn sandbox_stats(&self) -> R<Vec<cri::PodSandboxStats>> {
        let mut rt = self.rt.clone();
        Ok(rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .map_err(st("ListPodSandboxStats"))?
            .into_inner()
            .stats)
    }

    /// A sandbox's status (network address included).
    pub async fn sandbox_status(&self, id: &str) -> R<cri::PodSandboxStatus> {
        let mut rt = self.rt.clone();
        rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .map_err(st("PodSandboxStatus"))?
        .into_inner()
        .status
        .ok_or(CriClientError::Incomplete("PodSandboxStatus"))
    }

    /// Starts a sandbox; returns its id.
    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> R<String> {
        let mut rt = self.rt.clone();
        Ok(rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(st("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Stops a sandbox (its VM ends); not found counts as done.
    pub async fn stop_sandbox(&self, id: &str) -> R<()> {
        let mut rt = self.rt.clone();
        match rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
        {
            Err(s) if s.code() != tonic::Code::NotFound => Err(st("StopPodSandbox")(s)),
            _ => Ok(()),
        }
    }

    /// Removes a sandbox and its containers; not found counts as done.
    pub async fn remove_sandbox(&self, id: &str) -> R<()> {
        let mut rt = self.rt.clone();
        match rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
        {
            Err(s) if s.code() != tonic::Code::NotFound => Err(st("RemovePodSandbox")(s)),
            _ => Ok(()),
        }
    }

    /// Containers matching `labels`.
    pub async fn containers(
        &self,
        labels: std::collections::HashMap<String, String>,
    ) -> R<Vec<cri::Container>> {
        let mut rt = self.rt.clone();
        Ok(rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await
            .map_err(st("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// A container's status (exit code, reason, times).
    pub async fn container_status(&self, id: &str) -> R<cri::ContainerStatus> {
        let mut rt = self.rt.clone();
        rt.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .map_err(st("ContainerStatus"))?
        .into_inner()
        .status
        .ok_or(CriClientError::Incomplete("ContainerStatus"))
    }

    /// Creates a container in `sandbox`; returns its id.
    pub async fn create_container(
        &self,
        sandbox: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> R<String> {
        let mut rt = self.rt.clone();
        Ok(rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(st("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> R<()> {
        let mut rt = self.rt.clone();
        rt.start_container(cri::StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .map_err(st("StartContainer"))?;
        Ok(())
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace_secs`; not found counts as done.
    pub async fn stop_container(&self, id: &str, grace_secs: i64) -> R<()> {
        let mut rt = self.rt.clone();
        match rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout: grace_secs,
            })
            .await
        {
            Err(s) if s.code() != tonic::Code::NotFound => Err(st("StopContainer")(s)),
            _ => Ok(()),
        }
    }

    /// Removes a container; not found counts as done.
    pub async fn remove_container(&self, id: &str) -> R<()> {
        let mut rt = self.rt.clone();
        match rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
        {
            Err(s) if s.code() != tonic::Code::NotFound => Err(st("RemoveContainer")(s)),
            _ => Ok(()),
        }
    }

    /// Runs `cmd` in a container, returning (exit code, stdout, stderr).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> R<(i32, Vec<u8>, Vec<u8>)> {
        let mut rt = self.rt.clone();
        let call = rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd,
            timeout: timeout_secs,
        });
        // The runtime bounds the command by `timeout`; this bounds the whole call (a guest too
        // busy to even start the process), as kubelet's deadline of timeout plus a margin does.
        let r = if timeout_secs > 0 {
            let deadline = Duration::from_secs(timeout_secs as u64) + EXEC_MARGIN;
            tokio::time::timeout(deadline, call)
                .await
                .map_err(|_| CriClientError::Status {
                    op: "ExecSync",
                    status: tonic::Status::deadline_exceeded(format!(
                        "no answer within {} s",
                        deadline.as_secs()
                    )),
                })?
        } else {
            call.await
        }
        .map_err(st("ExecSync"))?
        .into_inner();
        Ok((r.exit_code, r.stdout, r.stderr))
    }

    /// Exec: the runtime's streaming URL for running `req.cmd` in a container.
    pub async fn exec(&self, req: cri::ExecRequest) -> R<String> {
        let mut rt = self.rt.clone();
        Ok(rt.exec(req).await.map_err(st("Exec"))?.into_inner().url)
    }

    /// Attach: the runtime's streaming URL for a container's own process.
    pub async fn attach(&self, req: cri::AttachRequest) -> R<String> {
        let mut rt = self.rt.clone();
        Ok(rt.attach(req).await.map_err(st("Attach"))?.into_inner().url)
    }

    /// PortForward: the runtime's streaming URL for connections to a sandbox's ports.
    pub async fn port_forward(&self, req: cri::PortForwardRequest) -> R<String> {
        let mut rt = self.rt.clone();
        Ok(rt
            .port_forward(req)
            .await
            .map_err(st("PortForward"))?
            .into_inner()
            .url)
    }

    /// The image's id when present on the node.
    pub async fn image_present(&self, image: &str) -> R<Option<String>> {
        let mut img = self.img.clone();
        let r = img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(st("ImageStatus"))?
            .into_inner();
        Ok(r.image.map(|i| i.id))
    }

    /// Pulls an image (with registry credentials); returns its reference.
    pub async fn pull_image(&self, image: &str, auth: Option<cri::AuthConfig>) -> R<String> {
        let mut img = self.img.clone();
        Ok(img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth,
                sandbox_config: None,
            })
            .await
            .map_err(st("PullImage"))?
            .into_inner()
            .image_ref)
    }
}
