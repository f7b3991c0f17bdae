//! The streaming HTTP server (hyper 1, HTTP/1.1 with upgrades): `GET|POST /exec/<token>`,
//! `/attach/<token>` and `/portforward/<token>`, the URLs the CRI `Exec`, `Attach` and
//! `PortForward` calls return. Each token is taken from the [`RequestCache`] once; the upgraded
//! connection is served by kennel-stream with an agent-backed session or the pod dialler.

use super::attach::AgentAttach;
use super::cache::RequestCache;
use super::exec::AgentExec;
use super::portforward::PodTarget;
use super::requests::Pending;
use crate::runtime::{CriError, Runtime};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kennel_stream::{
    negotiate_exec, negotiate_port_forward, serve_attach, serve_exec, serve_port_forward,
    ExecOptions, Limits, PortForwardOptions, Refusal,
};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Errors starting the streaming server.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The listen address could not be bound.
    #[error("binding the streaming server to {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What the CRI handlers and the HTTP handlers share: the pending requests and the base URL.
pub struct Streams {
    rt: Arc<Runtime>,
    base: String,
    cache: Mutex<RequestCache<Pending>>,
    limits: Limits,
}

impl Streams {
    /// The absolute base URL of the server, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Keeps a validated request under a new token; returns its URL.
    pub fn register(&self, req: Pending) -> Result<String, CriError> {
        let kind = req.kind();
        let token = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req)
            .map_err(|e| CriError::ResourceExhausted(e.to_string()))?;
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    fn take(&self, token: &str) -> Option<Pending> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .consume(token)
    }
}

/// The bound server, ready to serve.
pub struct StreamingServer {
    listener: TcpListener,
    streams: Arc<Streams>,
}

impl StreamingServer {
    /// Binds `addr` (port 0 picks one) inside `netns` (the node's namespace, where the node
    /// agent dials the URLs; `None`: this process's); URLs name the address actually bound.
    pub async fn bind(
        addr: SocketAddr,
        rt: Arc<Runtime>,
        netns: Option<netns::NetNs>,
    ) -> Result<Self, StreamingError> {
        let err = |source| StreamingError::Bind { addr, source };
        let listener = match netns {
            None => TcpListener::bind(addr).await.map_err(err)?,
            Some(ns) => {
                // A socket belongs to the namespace it was made in, whichever thread uses it.
                let std_listener = ns
                    .run(|| std::net::TcpListener::bind(addr))
                    .map_err(|e| err(std::io::Error::other(e)))?
                    .map_err(err)?;
                std_listener.set_nonblocking(true).map_err(err)?;
                TcpListener::from_std(std_listener).map_err(err)?
            }
        };
        let local = listener.local_addr().map_err(err)?;
        let streams = Arc::new(Streams {
            rt,
            base: format!("http://{local}"),
            cache: Mutex::new(RequestCache::default()),
            limits: Limits::default(),
        });
        Ok(Self { listener, streams })
    }

    /// The shared handle the CRI handlers register requests with.
    pub fn streams(&self) -> Arc<Streams> {
        self.streams.clone()
    }

    /// Serves until `shutdown` resolves (sessions already upgraded run on).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!("serving CRI streaming on {}", self.streams.base);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("streaming server: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let streams = self.streams.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, streams.clone()));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!("streaming connection from {peer}: {e}");
                }
            });
        }
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{}\n", message.into()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn refused(r: Refusal) -> Response<Full<Bytes>> {
    r.response().map(Full::new)
}

/// Splits `/<kind>/<token>`.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let (kind, token) = path.strip_prefix('/')?.split_once('/')?;
    let known = matches!(kind, "exec" | "attach" | "portforward");
    (known && !token.is_empty() && !token.contains('/')).then_some((kind, token))
}

async fn handle(
    mut req: Request<Incoming>,
    s: Arc<Streams>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let Some((kind, token)) = parse_path(&path) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("{path}: not a streaming URL (/exec|/attach|/portforward/<token>)"),
        ));
    };
    let Some(pending) = s.take(token) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "streaming token unknown, expired or already used",
        ));
    };
    if pending.kind() != kind {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            format!("this token is for /{}, not /{kind}", pending.kind()),
        ));
    }
    let resp = match pending {
        Pending::Exec {
            container_id,
            sandbox_id,
            opts,
        } => exec(&mut req, &s, Session::Exec, container_id, sandbox_id, opts).await,
        Pending::Attach {
            container_id,
            sandbox_id,
            opts,
            stdin_once,
        } => {
            let session = Session::Attach { stdin_once };
            exec(&mut req, &s, session, container_id, sandbox_id, opts).await
        }
        Pending::PortForward {
            vsock, ip, ports, ..
        } => port_forward(&mut req, &s, vsock, ip, &ports),
    };
    Ok(resp)
}

#[derive(Debug, Clone, Copy)]
enum Session {
    Exec,
    Attach { stdin_once: bool },
}

async fn exec(
    req: &mut Request<Incoming>,
    s: &Arc<Streams>,
    session: Session,
    container_id: String,
    sandbox_id: String,
    opts: ExecOptions,
) -> Response<Full<Bytes>> {
    let negotiated = match negotiate_exec(req) {
        Ok(n) => n,
        Err(r) => return refused(r),
    };
    let agent = match s.rt.agent(&sandbox_id).await {
        Ok(a) => a,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let upgrade = hyper::upgrade::on(req);
    let response = negotiated.response();
    let s = s.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::warn!("container {container_id}: streaming upgrade failed: {e}");
                return;
            }
        };
        let protocol = negotiated.protocol().name();
        let result = match session {
            Session::Exec => {
                let sess = AgentExec::new(s.rt.clone(), agent, container_id.clone(), opts.clone());
                serve_exec(io, &negotiated, &opts, sess, &s.limits).await
            }
            Session::Attach { stdin_once } => {
                let sess = AgentAttach::new(
                    s.rt.clone(),
                    agent,
                    container_id.clone(),
                    opts.clone(),
                    stdin_once,
                );
                serve_attach(io, &negotiated, &opts, sess, &s.limits).await
            }
        };
        tracing::info!("container {container_id}: {session:?} over {protocol} ended: {result:?}");
    });
    response.map(Full::new)
}

/// The ports of a port-forward: the query's (kubelet passes the client's query on), each of
/// them among those the CRI request named when it named any; else the request's.
pub fn forward_ports(query: Option<&str>, requested: &[u16]) -> Result<PortForwardOptions, String> {
    let mut opts = PortForwardOptions::from_query(query).map_err(|e| e.to_string())?;
    if opts.ports.is_empty() {
        opts.ports = requested.to_vec();
    } else if let Some(p) = opts
        .ports
        .iter()
        .find(|p| !requested.is_empty() && !requested.contains(p))
    {
        return Err(format!(
            "port {p} was not in the PortForward request ({requested:?})"
        ));
    }
    Ok(opts)
}

fn port_forward(
    req: &mut Request<Incoming>,
    s: &Arc<Streams>,
    vsock: std::path::PathBuf,
    ip: std::net::Ipv4Addr,
    ports: &[u16],
) -> Response<Full<Bytes>> {
    let opts = match forward_ports(req.uri().query(), ports) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let negotiated = match negotiate_port_forward(req, &opts) {
        Ok(n) => n,
        Err(r) => return refused(r),
    };
    let upgrade = hyper::upgrade::on(req);
    let response = negotiated.response();
    let netns = s.rt.opts.netns.clone();
    let limits = s.limits.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::warn!("port-forward to {ip}: upgrade failed: {e}");
                return;
            }
        };
        let target = PodTarget { vsock, netns, ip };
        let dialler = move |port: u16| {
            let target = target.clone();
            async move { target.dial(port).await }
        };
        let result = serve_port_forward(io, &negotiated, &opts, dialler, &limits).await;
        tracing::info!("port-forward to {ip} {:?} ended: {result:?}", opts.ports);
    });
    response.map(Full::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/exec/abc"), Some(("exec", "abc")));
        assert_eq!(
            parse_path("/portforward/x-_9"),
            Some(("portforward", "x-_9"))
        );
        for bad in [
            "/",
            "/exec",
            "/exec/",
            "/exec/a/b",
            "/other/abc",
            "exec/abc",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn ports_come_from_the_query_or_the_request() {
        assert_eq!(forward_ports(None, &[8080]).unwrap().ports, [8080]);
        assert_eq!(
            forward_ports(Some("ports=8080"), &[8080, 9090])
                .unwrap()
                .ports,
            [8080]
        );
        assert_eq!(forward_ports(Some("ports=81"), &[]).unwrap().ports, [81]);
        let e = forward_ports(Some("ports=81"), &[8080]).unwrap_err();
        assert!(e.contains("81") && e.contains("8080"), "{e}");
        assert!(forward_ports(Some("ports=x"), &[]).is_err());
        assert!(forward_ports(None, &[]).unwrap().ports.is_empty());
    }
}
