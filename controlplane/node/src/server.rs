//! The node's HTTPS API, in the shape of kubelet's port 10250: `GET /containerLogs/{namespace}/
//! {pod}/{container}` streams a container's log (text/plain, chunked, flushed per chunk) with
//! kubelet's query options, `/exec`, `/attach` and `/portForward` proxy kubectl's streams to the
//! runtime (module [`crate::stream`]), and `GET /healthz` answers `ok`. Every other request must carry
//! `Authorization: Bearer <client token>` (the API server's kubelet-client token), else 401.
//! TLS uses the node's serving certificate (rustls, ring provider).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as AxPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::cri::CriClient;
use crate::logs::{self, LogError, LogOptions, LogReader};
use crate::stream;

/// Configuration of the node's API server.
#[derive(Debug, Clone)]
pub struct LogServerConfig {
    /// Listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM), e.g. from `kennel_apiserver::pki::issue_node_cert`.
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// The bearer token clients must present (the API server's kubelet-client token).
    pub client_token: String,
    /// Root of the container logs (`<root>/<ns>_<pod>_<uid>/<container>/<n>.log`).
    pub logs_root: PathBuf,
    /// The runtime's CRI socket, for exec, attach, port-forward and stats (`None`: those answer 503).
    pub cri_socket: Option<PathBuf>,
    /// The node's name (in `/stats/summary`).
    pub node_name: String,
}

/// Time allowed for each CRI call the streaming endpoints make.
const CRI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors starting the node's API server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificate or key PEM does not parse.
    #[error("invalid {0} PEM")]
    Pem(&'static str),
    /// rustls rejected the certificate and key.
    #[error("tls config: {0}")]
    Tls(#[from] rustls::Error),
    /// The listen address could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A rustls server configuration (HTTP/2 and HTTP/1.1) for a certificate chain and key.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| ServerError::Pem("certificate"))?;
    if certs.is_empty() {
        return Err(ServerError::Pem("certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| ServerError::Pem("private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Clone)]
struct AppState {
    logs_root: Arc<PathBuf>,
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A `/containerLogs` request that cannot be served; each maps to kubelet's status.
#[derive(Debug, thiserror::Error)]
pub enum LogRequestError {
    /// A parameter does not parse (400).
    #[error("invalid value {value:?} for {param}")]
    BadParam {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: String,
    },
    /// The options are out of range (422).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// Finding or opening the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl IntoResponse for LogRequestError {
    fn into_response(self) -> Response {
        let code = match &self {
            LogRequestError::BadParam { .. } => StatusCode::BAD_REQUEST,
            LogRequestError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            LogRequestError::Log(LogError::PodNotFound { .. })
            | LogRequestError::Log(LogError::ContainerNotFound { .. }) => StatusCode::NOT_FOUND,
            LogRequestError::Log(LogError::PreviousNotFound { .. }) => StatusCode::BAD_REQUEST,
            LogRequestError::Log(LogError::Io { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        text(code, self.to_string())
    }
}

/// A log request's options: `previous` and the reading options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Read the previous run's log.
    pub previous: bool,
    /// How to read it.
    pub options: LogOptions,
}

/// A boolean as the Kubernetes parameter codec reads it: absent, `0` or `false` is false, any other
/// value true.
fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn int(q: &HashMap<String, String>, key: &'static str) -> Result<Option<i64>, LogRequestError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| LogRequestError::BadParam {
                param: key,
                value: v.clone(),
            }),
    }
}

impl LogQuery {
    /// Parses and validates kubelet's query parameters (`follow`, `previous`, `tailLines` or the
    /// legacy `tail`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`); `now` anchors
    /// `sinceSeconds`.
    pub fn parse(q: &HashMap<String, String>, now: DateTime<Utc>) -> Result<Self, LogRequestError> {
        let mut q = q.clone();
        if let Some(tail) = q.remove("tail").filter(|t| !t.is_empty()) {
            if tail != "all" {
                q.insert("tailLines".into(), tail);
            } else {
                q.remove("tailLines");
            }
        }
        let tail = int(&q, "tailLines")?;
        let limit = int(&q, "limitBytes")?;
        let since_seconds = int(&q, "sinceSeconds")?;
        let since_time = match q.get("sinceTime").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(
                DateTime::parse_from_rfc3339(v)
                    .map_err(|_| LogRequestError::BadParam {
                        param: "sinceTime",
                        value: v.clone(),
                    })?
                    .with_timezone(&Utc),
            ),
        };
        if tail.is_some_and(|t| t < 0) {
            return Err(LogRequestError::Invalid("tailLines must be >= 0"));
        }
        if limit.is_some_and(|b| b < 1) {
            return Err(LogRequestError::Invalid("limitBytes must be > 0"));
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(LogRequestError::Invalid(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        if since_seconds.is_some_and(|s| s < 1) {
            return Err(LogRequestError::Invalid("sinceSeconds must be > 0"));
        }
        Ok(Self {
            previous: flag(&q, "previous"),
            options: LogOptions {
                follow: flag(&q, "follow"),
                tail_lines: tail.map(|t| t as u64),
                since: LogOptions::since_from(now, since_seconds, since_time),
                timestamps: flag(&q, "timestamps"),
                limit_bytes: limit.map(|b| b as u64),
            },
        })
    }
}

async fn container_logs(
    State(state): State<AppState>,
    AxPath((namespace, pod, container)): AxPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, LogRequestError> {
    let q = LogQuery::parse(&query, Utc::now())?;
    let root = state.logs_root.clone();
    let log = tokio::task::spawn_blocking(move || {
        logs::locate(&root, &namespace, &pod, &container, q.previous)
    })
    .await
    .map_err(|e| LogError::Io {
        path: state.logs_root.as_ref().clone(),
        source: std::io::Error::other(e),
    })??;
    let reader = LogReader::open(&log, q.options).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        if let Err(e) = reader.run(tx).await {
            tracing::warn!(error = %e, "streaming container log failed");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .map(Ok::<Bytes, Infallible>);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[derive(Clone)]
struct StatsState {
    cri: Option<CriClient>,
    node_name: Arc<String>,
    stats: crate::stats::Stats,
}

/// `GET /stats/summary`: kubelet's Summary API (node, pod and container CPU and memory).
async fn stats_summary(State(st): State<StatsState>) -> Response {
    let Some(cri) = st.cri.as_ref() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no container runtime configured",
        );
    };
    match st.stats.summary(cri, &st.node_name).await {
        Ok(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// The node API's routes: logs under `logs_root` and, through the runtime `cri`, exec, attach
/// and port-forward; all but `/healthz` require `client_token`.
pub fn router(
    logs_root: PathBuf,
    client_token: String,
    cri: Option<CriClient>,
    node_name: String,
) -> Router {
    let stats = Router::new()
        .route("/stats/summary", get(stats_summary))
        .with_state(StatsState {
            cri: cri.clone(),
            node_name: Arc::new(node_name),
            stats: crate::stats::Stats::default(),
        });
    let streaming = Router::new()
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(stream::exec).post(stream::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(stream::attach).post(stream::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(stream::port_forward).post(stream::port_forward),
        )
        .with_state(cri);
    Router::new()
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok") }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(AppState {
            logs_root: Arc::new(logs_root),
        })
        .merge(streaming)
        .merge(stats)
        .layer(middleware::from_fn_with_state(Arc::new(client_token), auth))
}

/// The node's API server running in the background; stops (with its open streams) on
/// [`RunningLogServer::shutdown`] or drop.
pub struct RunningLogServer {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningLogServer {
    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningLogServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `cfg.listen` and serves in a background task; the returned handle names the bound
/// address (useful with port 0).
pub async fn spawn(cfg: LogServerConfig) -> Result<RunningLogServer, ServerError> {
    let listen = cfg.listen;
    let (listener, tls, app) = prepare(cfg).await?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(accept_loop(listener, tls, app, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, "node API listening");
    Ok(RunningLogServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Binds `cfg.listen` and serves until `shutdown` completes; open connections are closed then.
pub async fn serve(
    cfg: LogServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (listener, tls, app) = prepare(cfg).await?;
    accept_loop(listener, tls, app, shutdown).await;
    Ok(())
}

async fn prepare(
    cfg: LogServerConfig,
) -> Result<(TcpListener, Arc<rustls::ServerConfig>, Router), ServerError> {
    let tls = tls_config(&cfg.cert_pem, &cfg.key_pem)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let cri = cfg
        .cri_socket
        .as_deref()
        .map(|socket| CriClient::new(socket, CRI_TIMEOUT));
    Ok((
        listener,
        tls,
        router(cfg.logs_root, cfg.client_token, cri, cfg.node_name),
    ))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let stream = match acceptor.accept(sock).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    conns.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    const TOKEN: &str = "s3cret";

    fn logs_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("default_web_uid-1/app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("0.log"),
            "2024-05-01T10:00:00Z stdout F run zero\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("1.log"),
            "2024-05-01T10:00:01Z stdout F one\n2024-05-01T10:00:02Z stderr F two\n",
        )
        .unwrap();
        let solo = root.path().join("default_solo_uid-2/app");
        std::fs::create_dir_all(&solo).unwrap();
        std::fs::write(solo.join("0.log"), "").unwrap();
        root
    }

    async fn call(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::get(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_auth_and_statuses() {
        let root = logs_root();
        let app = router(root.path().to_path_buf(), TOKEN.into(), None, "n1".into());
        let logs = "/containerLogs/default/web/app";
        assert_eq!(
            call(&app, "/healthz", None).await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(call(&app, logs, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(&app, logs, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&app, logs, Some(TOKEN)).await,
            (StatusCode::OK, "one\ntwo\n".into())
        );
        assert_eq!(
            call(&app, &format!("{logs}?previous=true"), Some(TOKEN)).await,
            (StatusCode::OK, "run zero\n".into())
        );
        assert_eq!(
            call(
                &app,
                &format!("{logs}?tailLines=1&timestamps=true"),
                Some(TOKEN)
            )
            .await,
            (StatusCode::OK, "2024-05-01T10:00:02Z two\n".into())
        );
        assert_eq!(
            call(&app, &format!("{logs}?tail=1"), Some(TOKEN)).await.1,
            "two\n"
        );
        assert_eq!(
            call(&app, &format!("{logs}?limitBytes=5"), Some(TOKEN))
                .await
                .1,
            "one\nt"
        );
        assert_eq!(
            call(
                &app,
                &format!("{logs}?sinceTime=2024-05-01T10%3A00%3A02Z"),
                Some(TOKEN)
            )
            .await
            .1,
            "two\n"
        );
        assert_eq!(
            call(&app, "/containerLogs/default/nope/app", Some(TOKEN)).await,
            (
                StatusCode::NOT_FOUND,
                "pod \"nope\" in namespace \"default\" does not exist".into()
            )
        );
        assert_eq!(
            call(&app, "/containerLogs/default/web/db", Some(TOKEN)).await,
            (
                StatusCode::NOT_FOUND,
                "container \"db\" not found in pod \"web\"".into()
            )
        );
        assert_eq!(
            call(
                &app,
                "/containerLogs/default/solo/app?previous=1",
                Some(TOKEN)
            )
            .await,
            (
                StatusCode::BAD_REQUEST,
                "previous terminated container \"app\" in pod \"solo\" not found".into()
            )
        );
        assert_eq!(
            call(&app, "/containerLogs/default/web/..%2F..%2Fx", Some(TOKEN))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&app, &format!("{logs}?tailLines=x"), Some(TOKEN))
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&app, &format!("{logs}?tailLines=-1"), Some(TOKEN))
                .await
                .0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            call(
                &app,
                &format!("{logs}?sinceSeconds=1&sinceTime=2024-05-01T10:00:02Z"),
                Some(TOKEN)
            )
            .await
            .0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn query_flags_follow_the_parameter_codec() {
        let q = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogQuery::parse(&m, Utc::now()).unwrap()
        };
        assert!(q(&[("follow", "true")]).options.follow);
        assert!(q(&[("follow", "")]).options.follow);
        assert!(!q(&[("follow", "false")]).options.follow);
        assert!(!q(&[("follow", "0")]).options.follow);
        assert!(!q(&[]).options.follow);
        assert_eq!(
            q(&[("tail", "all"), ("tailLines", "3")]).options.tail_lines,
            None
        );
        assert_eq!(q(&[("tailLines", "3")]).options.tail_lines, Some(3));
        assert!(q(&[("sinceSeconds", "10")]).options.since.is_some());
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS connection to `addr` trusting `ca_pem`.
    async fn https_connect(
        addr: SocketAddr,
        ca_pem: &str,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    /// One raw HTTP/1.1 request over TLS, trusting `ca_pem`; returns the status code and the
    /// response text.
    async fn https_get(addr: SocketAddr, ca_pem: &str, path: &str, token: &str) -> (u16, String) {
        let mut tls = https_connect(addr, ca_pem).await;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    }

    #[tokio::test]
    async fn streaming_routes_check_their_query_before_the_runtime() {
        let root = logs_root();
        let app = router(root.path().to_path_buf(), TOKEN.into(), None, "n1".into());
        let (code, _) = call(&app, "/exec/default/web/app?command=ls&stdout=1", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, text) = call(&app, "/exec/default/web/app?stdout=1", Some(TOKEN)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(text.contains("at least one command"), "{text}");
        let (code, text) = call(&app, "/portForward/default/web?ports=0", Some(TOKEN)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
        let (code, text) = call(
            &app,
            "/exec/default/web/app?command=ls&stdout=1",
            Some(TOKEN),
        )
        .await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("no CRI socket"), "{text}");
        let (code, _) = call(&app, "/attach/default/web/app?stdout=1", Some(TOKEN)).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn serves_tls_and_rejects_a_wrong_token() {
        let root = logs_root();
        let (cert_pem, key_pem) = self_signed();
        let server = spawn(LogServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_pem: cert_pem.clone(),
            key_pem,
            client_token: TOKEN.into(),
            logs_root: root.path().to_path_buf(),
            cri_socket: None,
            node_name: "n1".into(),
        })
        .await
        .unwrap();
        let path = "/containerLogs/default/web/app";
        let (code, text) = https_get(server.addr, &cert_pem, path, "wrong").await;
        assert_eq!(code, 401, "{text}");
        let (code, text) = https_get(server.addr, &cert_pem, path, TOKEN).await;
        assert_eq!(code, 200, "{text}");
        assert!(text.contains("one\n") && text.contains("two\n"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{text}"
        );
        // a follow stream ends on the node when its client disconnects
        let log = root
            .path()
            .join("default_web_uid-1/app/1.log")
            .canonicalize()
            .unwrap();
        let open = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == log))
                .count()
        };
        let mut tls = https_connect(server.addr, &cert_pem).await;
        let req = format!(
            "GET {path}?follow=true HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = String::new();
        while !got.contains("two\n") {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended early: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(open(), 1, "the follow stream reads the log");
        drop(tls);
        let mut closed = false;
        for _ in 0..50 {
            if open() == 0 {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(closed, "the node kept following after the client left");
        server.shutdown().await;
        // a bad PEM is a clear error
        let err = tls_config("nope", "nope").unwrap_err();
        assert_eq!(err.to_string(), "invalid certificate PEM");
    }
}
