//! kubelet's streaming endpoints on the node API: `/exec/{namespace}/{pod}/{container}`,
//! `/attach/{namespace}/{pod}/{container}` (GET or POST) and `/portForward/{namespace}/{pod}`.
//! Each validates the query as kubelet does (kennel-stream's parsers), finds the pod's running
//! container (or ready sandbox) among the runtime's CRI objects by kubelet's labels, asks the
//! runtime for a streaming URL (CRI `Exec`/`Attach`/`PortForward`) and proxies the client's
//! upgrade request to that URL (kubelet's non-redirect mode), so the runtime's streaming server
//! speaks SPDY or WebSocket with the client through this hop and the API server's.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path as AxPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_cri::v1 as cri;
use kennel_stream::{ExecOptions, PortForwardOptions, Refusal};

use crate::cri::{labels, CriClient, CriClientError};

/// Why a streaming request was not proxied.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request's options do not parse (400, kubelet's words).
    #[error(transparent)]
    Query(#[from] kennel_stream::QueryError),
    /// No such pod or container on this node (404).
    #[error("{0}")]
    NotFound(String),
    /// The runtime refused or failed the CRI call.
    #[error("{0}")]
    Runtime(#[from] CriClientError),
    /// The runtime's streaming URL is not `http://host:port/path`.
    #[error("the runtime returned an unusable streaming URL {0:?}")]
    Url(String),
    /// The runtime's streaming server could not be reached or failed the exchange.
    #[error("proxying to the runtime's streaming server: {0}")]
    Proxy(String),
    /// This node agent was started without a runtime socket.
    #[error("streaming is not configured on this node (no CRI socket)")]
    NoRuntime,
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let code = match &self {
            StreamError::Query(e) => {
                return Refusal::from(e.clone()).response().map(Body::from);
            }
            StreamError::NotFound(_) => StatusCode::NOT_FOUND,
            StreamError::Runtime(CriClientError::Status { status, .. }) => match status.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            StreamError::NoRuntime => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            StreamError::Runtime(CriClientError::Status { status, .. }) => {
                status.message().to_string()
            }
            other => other.to_string(),
        };
        (code, format!("{message}\n")).into_response()
    }
}

/// The running container `container` of pod `namespace/pod` (the newest, after restarts).
async fn find_container(
    cri: &CriClient,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, StreamError> {
    let selector = HashMap::from([
        (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
    ]);
    let all = cri.containers(selector).await?;
    if all.is_empty() && cri.sandboxes(pod_labels(namespace, pod)).await?.is_empty() {
        return Err(StreamError::NotFound("pod does not exist".into()));
    }
    let mut named: Vec<_> = all
        .into_iter()
        .filter(|c| c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container))
        .collect();
    named.sort_by_key(|c| {
        (
            c.state == cri::ContainerState::ContainerRunning as i32,
            c.created_at,
        )
    });
    named
        .pop()
        .map(|c| c.id)
        .ok_or_else(|| StreamError::NotFound(format!("container not found ({container:?})")))
}

fn pod_labels(namespace: &str, pod: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
    ])
}

/// The ready sandbox of pod `namespace/pod`.
async fn find_sandbox(cri: &CriClient, namespace: &str, pod: &str) -> Result<String, StreamError> {
    let mut all = cri.sandboxes(pod_labels(namespace, pod)).await?;
    all.retain(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
    all.sort_by_key(|s| s.created_at);
    all.pop()
        .map(|s| s.id)
        .ok_or_else(|| StreamError::NotFound("pod does not exist".into()))
}

/// Proxies `req` to the runtime's streaming `url` (`http://host:port/path`).
async fn proxy_to(req: Request, url: &str) -> Result<Response, StreamError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StreamError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(StreamError::Url(url.into()));
    }
    let io = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| StreamError::Proxy(format!("dial {authority}: {e}")))?;
    let _ = io.set_nodelay(true);
    let resp = kennel_stream::forward_upgrade(req, io, authority, path, HeaderMap::new())
        .await
        .map_err(|e| StreamError::Proxy(e.to_string()))?;
    Ok(resp.map(Body::from))
}

fn runtime(cri: &Option<CriClient>) -> Result<&CriClient, StreamError> {
    cri.as_ref().ok_or(StreamError::NoRuntime)
}

/// `/exec/{namespace}/{pod}/{container}`.
pub async fn exec(
    State(cri): State<Option<CriClient>>,
    AxPath((namespace, pod, container)): AxPath<(String, String, String)>,
    req: Request,
) -> Result<Response, StreamError> {
    let opts = ExecOptions::exec_from_query(req.uri().query())?;
    let cri = runtime(&cri)?;
    let id = find_container(cri, &namespace, &pod, &container).await?;
    let url = cri
        .exec(cri::ExecRequest {
            container_id: id,
            cmd: opts.command,
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await?;
    proxy_to(req, &url).await
}

/// `/attach/{namespace}/{pod}/{container}`.
pub async fn attach(
    State(cri): State<Option<CriClient>>,
    AxPath((namespace, pod, container)): AxPath<(String, String, String)>,
    req: Request,
) -> Result<Response, StreamError> {
    let opts = ExecOptions::attach_from_query(req.uri().query())?;
    let cri = runtime(&cri)?;
    let id = find_container(cri, &namespace, &pod, &container).await?;
    let url = cri
        .attach(cri::AttachRequest {
            container_id: id,
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await?;
    proxy_to(req, &url).await
}

/// `/portForward/{namespace}/{pod}`.
pub async fn port_forward(
    State(cri): State<Option<CriClient>>,
    AxPath((namespace, pod)): AxPath<(String, String)>,
    req: Request,
) -> Result<Response, StreamError> {
    let opts = PortForwardOptions::from_query(req.uri().query())?;
    let cri = runtime(&cri)?;
    let sandbox = find_sandbox(cri, &namespace, &pod).await?;
    let url = cri
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox,
            port: opts.ports.iter().map(|p| i32::from(*p)).collect(),
        })
        .await?;
    proxy_to(req, &url).await
}
