//! `GET pods/{name}/log`, as upstream's `LogREST`: validates the `PodLogOptions`, checks the
//! container against the pod, finds the pod's node, then connects to that node's API (kubelet's
//! `/containerLogs/{namespace}/{pod}/{container}`, port 10250 unless the Node says otherwise) over
//! HTTPS, verifying the node's certificate against the cluster CA and presenting the cluster's
//! kubelet-client token, and streams the node's body back unchanged, chunk by chunk (so `follow`
//! is live).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::{json_response, read_current, ApiState};
use crate::pki::PkiError;
use crate::registry;
use crate::request::{Query, Target};
use crate::status::{ApiError, Cause};

/// Time allowed for the TCP connection and the TLS handshake to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a node to answer with its response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest error body read from a node.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The kubelet API port when the Node does not name one.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// How the API server reaches node agents: TLS verified against the cluster CA, and the bearer
/// token node agents accept (`pki/kubelet-client.token`).
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
    token: String,
}

impl KubeletClient {
    /// A client trusting the CA certificates in `ca_pem` and presenting `token`.
    pub fn new(ca_pem: &str, token: impl Into<String>) -> Result<Self, PkiError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|_| PkiError::Pem("ca.crt".into()))?;
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            token: token.into(),
        })
    }
}

/// Why a log request failed before (or while) reaching the node.
#[derive(Debug, thiserror::Error)]
pub enum PodLogError {
    /// An API error (pod or node not found, invalid options, ...).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The node answered 404 with this message.
    #[error("{0}")]
    NodeNotFound(String),
    /// The node could not be reached or answered something unusable.
    #[error("{0}")]
    Node(String),
}

impl PodLogError {
    pub(super) fn into_response(self, pod: &str) -> Response {
        match self {
            PodLogError::Api(e) => e.into_response(),
            PodLogError::NodeNotFound(message) => {
                let mut status = ApiError::UnknownResource.status();
                status["message"] = json!(message);
                status["details"] = json!({"name": pod, "kind": "pods/log"});
                json_response(StatusCode::NOT_FOUND, &status, &[])
            }
            PodLogError::Node(message) => ApiError::Internal(message).into_response(),
        }
    }
}

/// The `PodLogOptions` of a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `container`.
    pub container: Option<String>,
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime` (RFC 3339).
    pub since_time: Option<DateTime<FixedOffset>>,
    /// `tailLines`.
    pub tail_lines: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<i64>,
}

/// A boolean query parameter as upstream's parameter codec reads it: absent, `0` or `false` is
/// false, anything else (even empty) is true.
fn bool_param(q: &Query, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn int_param(q: &Query, key: &str) -> Result<Option<i64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("invalid value {v:?} for {key}: must be an integer"))
        }),
    }
}

fn invalid(field: &str, value: i64, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {value}: {why}"),
        field: field.into(),
    }
}

impl LogOptions {
    /// Reads and validates the options (upstream's `ValidatePodLogOptions`): 400 for values that
    /// do not parse, 422 for values out of range.
    pub fn from_query(q: &Query, pod: &str) -> Result<Self, ApiError> {
        let since_time = match q.get("sinceTime").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(DateTime::parse_from_rfc3339(v).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid value {v:?} for sinceTime: must be an RFC 3339 time"
                ))
            })?),
        };
        let opts = Self {
            container: q.get("container").filter(|c| !c.is_empty()).cloned(),
            follow: bool_param(q, "follow"),
            previous: bool_param(q, "previous"),
            timestamps: bool_param(q, "timestamps"),
            since_seconds: int_param(q, "sinceSeconds")?,
            since_time,
            tail_lines: int_param(q, "tailLines")?,
            limit_bytes: int_param(q, "limitBytes")?,
        };
        let mut causes = Vec::new();
        if let Some(t) = opts.tail_lines.filter(|t| *t < 0) {
            causes.push(invalid(
                "tailLines",
                t,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(b) = opts.limit_bytes.filter(|b| *b < 1) {
            causes.push(invalid("limitBytes", b, "must be greater than 0"));
        }
        match (opts.since_seconds, opts.since_time) {
            (Some(_), Some(_)) => causes.push(Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                    .into(),
                field: String::new(),
            }),
            (Some(s), None) if s < 1 => {
                causes.push(invalid("sinceSeconds", s, "must be greater than 0"))
            }
            _ => {}
        }
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                kind: "PodLogOptions".into(),
                name: pod.into(),
                causes,
            });
        }
        Ok(opts)
    }

    /// The node's query string (upstream's `LogLocation` parameters).
    pub fn node_query(&self) -> String {
        let mut params: Vec<(&str, String)> = Vec::new();
        if self.follow {
            params.push(("follow", "true".into()));
        }
        if self.previous {
            params.push(("previous", "true".into()));
        }
        if self.timestamps {
            params.push(("timestamps", "true".into()));
        }
        if let Some(s) = self.since_seconds {
            params.push(("sinceSeconds", s.to_string()));
        }
        if let Some(t) = self.since_time {
            let t = t
                .with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true);
            params.push(("sinceTime", t));
        }
        if let Some(t) = self.tail_lines {
            params.push(("tailLines", t.to_string()));
        }
        if let Some(b) = self.limit_bytes {
            params.push(("limitBytes", b.to_string()));
        }
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Names of all containers of a pod, in upstream's order: init, regular, ephemeral.
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// Upstream's `validateContainer`: the named container must exist; without a name, the pod's only
/// (regular) container.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let all = container_names(pod);
    match requested {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let regular: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match regular.as_slice() {
                [only] => Ok(only.to_string()),
                [] => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}"
                ))),
                _ => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// The node's API endpoint: its `InternalIP` (else `Hostname`) address and
/// `status.daemonEndpoints.kubeletEndpoint.Port` (default 10250).
pub fn node_endpoint(node: &Value) -> Result<(String, u16), String> {
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |ty: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == ty)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
            .map(str::to_string)
    };
    let host = find("InternalIP")
        .or_else(|| find("Hostname"))
        .ok_or_else(|| {
            format!(
                "no preferred addresses found; known addresses: {}",
                Value::Array(addresses.clone())
            )
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((host, port))
}

/// How to reach node `node_name`'s API: the client, its host and port.
pub(super) async fn node_access(
    state: &ApiState,
    node_name: &str,
) -> Result<(Arc<KubeletClient>, String, u16), PodLogError> {
    let nodes = registry::find("", "v1", "nodes").expect("nodes registered");
    let (_, node) = read_current(state, nodes, None, node_name).await?;
    let (host, port) = node_endpoint(&node).map_err(PodLogError::Node)?;
    let client = state
        .kubelet
        .clone()
        .ok_or_else(|| PodLogError::Node("node access is not configured".into()))?;
    Ok((client, host, port))
}

/// `GET .../pods/{name}/log`.
pub async fn get(state: &ApiState, t: &Target, query: &Query) -> Response {
    let name = t.name.clone().unwrap_or_default();
    match stream_logs(state, t, &name, query).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(&name),
    }
}

async fn stream_logs(
    state: &ApiState,
    t: &Target,
    name: &str,
    query: &Query,
) -> Result<Response, PodLogError> {
    let opts = LogOptions::from_query(query, name)?;
    let (_, pod) = read_current(state, t.def, t.namespace.as_deref(), name).await?;
    let container = pick_container(&pod, opts.container.as_deref())?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start - no logs yet (pod is not scheduled to a node)"
        ))
        .into());
    }
    let (client, host, port) = node_access(state, node_name).await?;
    let namespace = t.namespace.as_deref().unwrap_or("default");
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    let q = opts.node_query();
    if !q.is_empty() {
        path = format!("{path}?{q}");
    }
    let resp = request(&client, &host, port, &path).await?;
    let code = resp.status();
    if !code.is_success() {
        let text = error_text(resp.into_body()).await;
        return Err(match code {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(text).into(),
            StatusCode::NOT_FOUND => PodLogError::NodeNotFound(text),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PodLogError::Node(format!(
                "node {node_name} rejected the API server's kubelet-client credentials ({code}): {text}"
            )),
            _ => PodLogError::Node(format!("node {node_name} answered {code}: {text}")),
        });
    }
    let mut out = Response::new(Body::new(resp.into_body()));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

/// `host:port` as a URL authority (IPv6 in brackets).
pub(super) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TLS connection to the node API at `host:port`, its certificate verified against the
/// cluster CA; errors read as Go's `Get "<url>": ...` for `url`.
pub(super) async fn connect_node(
    client: &KubeletClient,
    host: &str,
    port: u16,
    url: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, PodLogError> {
    let authority = authority(host, port);
    let fail = |e: String| PodLogError::Node(format!("Get \"{url}\": {e}"));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| fail("dial tcp: i/o timeout".into()))?
        .map_err(|e| fail(format!("dial tcp {authority}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|e| fail(format!("server name: {e}")))?;
    tokio::time::timeout(CONNECT_TIMEOUT, client.tls.connect(server_name, tcp))
        .await
        .map_err(|_| fail("TLS handshake timeout".into()))?
        .map_err(|e| fail(format!("tls: {e}")))
}

impl KubeletClient {
    /// The `Authorization` header node agents accept.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// Sends `GET path` to the node at `host:port` and returns its response (headers read, body not).
pub(super) async fn request(
    client: &KubeletClient,
    host: &str,
    port: u16,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, PodLogError> {
    let authority = authority(host, port);
    let url = format!("https://{authority}{path}");
    let fail = |e: String| PodLogError::Node(format!("Get \"{url}\": {e}"));
    let tls = connect_node(client, host, port, &url).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "node connection ended");
        }
    });
    let req = Request::get(path)
        .header(header::HOST, &authority)
        .header(header::AUTHORIZATION, client.bearer())
        .header(header::USER_AGENT, "kennel-apiserver")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| fail("timeout awaiting response headers".into()))?
        .map_err(|e| fail(e.to_string()))
}

/// The (bounded) text of a node's error response.
async fn error_text(mut body: hyper::body::Incoming) -> String {
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() >= MAX_ERROR_BODY {
                    buf.truncate(MAX_ERROR_BODY);
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, read).await;
    String::from_utf8_lossy(&buf).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_validate_and_forward() {
        let o = LogOptions::from_query(
            &q(&[
                ("container", "app"),
                ("follow", "true"),
                ("previous", "1"),
                ("timestamps", "false"),
                ("tailLines", "3"),
                ("limitBytes", "10"),
                ("sinceTime", "2024-05-01T10:00:00+02:00"),
            ]),
            "web",
        )
        .unwrap();
        assert_eq!(o.container.as_deref(), Some("app"));
        assert!(o.follow && o.previous && !o.timestamps);
        assert_eq!(
            o.node_query(),
            "follow=true&previous=true&sinceTime=2024-05-01T08%3A00%3A00Z&tailLines=3&limitBytes=10"
        );
        assert_eq!(
            LogOptions::from_query(&q(&[]), "web").unwrap().node_query(),
            ""
        );
        assert!(matches!(
            LogOptions::from_query(&q(&[("tailLines", "x")]), "web"),
            Err(ApiError::BadRequest(_))
        ));
        let err = LogOptions::from_query(
            &q(&[
                ("tailLines", "-1"),
                ("limitBytes", "0"),
                ("sinceSeconds", "0"),
            ]),
            "web",
        )
        .unwrap_err();
        assert_eq!(err.code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.to_string(),
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0, \
             limitBytes: Invalid value: 0: must be greater than 0, sinceSeconds: Invalid value: 0: must be greater than 0"
        );
        let both = LogOptions::from_query(
            &q(&[("sinceSeconds", "5"), ("sinceTime", "2024-05-01T10:00:00Z")]),
            "web",
        )
        .unwrap_err();
        assert!(both.to_string().contains("at most one of"), "{both}");
    }

    #[test]
    fn containers_as_upstream() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            pick_container(&pod, None).unwrap_err().to_string(),
            "a container name must be specified for pod web, choose one of: [init a b]"
        );
        assert_eq!(pick_container(&pod, Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&pod, Some("init")).unwrap(), "init");
        let e = pick_container(&pod, Some("c")).unwrap_err();
        assert_eq!(e.code(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "container c is not valid for pod web");
        let one = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
    }

    #[test]
    fn node_endpoints() {
        let n = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(node_endpoint(&n).unwrap(), ("10.0.0.5".into(), 12345));
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "node-1"}]}});
        assert_eq!(node_endpoint(&n).unwrap(), ("node-1".into(), 10250));
        let n = json!({"status": {"addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]}});
        assert!(node_endpoint(&n)
            .unwrap_err()
            .starts_with("no preferred addresses found"));
    }
}
