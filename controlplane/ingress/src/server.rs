//! The HTTP and HTTPS listeners: accept, (TLS handshake with the SNI resolver,) then hyper's
//! auto connection (HTTP/1.1, or HTTP/2 by ALPN / prior knowledge) with upgrades enabled.
//! Connection tasks live in the listener's task set, so stopping the listener ends them.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::forward::{self, ConnInfo, Proxy};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

async fn serve_conn<I>(io: I, conn: ConnInfo, proxy: Arc<Proxy>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| forward::handle(proxy.clone(), conn, req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(peer = %conn.peer, error = %e, "ingress connection ended");
    }
}

/// Accepts plain HTTP connections until dropped.
pub(crate) async fn http(listener: TcpListener, proxy: Arc<Proxy>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = ConnInfo { peer, port, scheme: "http" };
                    conns.spawn(serve_conn(stream, conn, proxy.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ingress accept (http)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Accepts TLS connections until dropped.
pub(crate) async fn https(listener: TcpListener, acceptor: TlsAcceptor, proxy: Arc<Proxy>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = ConnInfo { peer, port, scheme: "https" };
                    let (acceptor, proxy) = (acceptor.clone(), proxy.clone());
                    conns.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => serve_conn(tls, conn, proxy).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ingress accept (https)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
