//! Serving port-forward: [`serve_port_forward`] accepts the client's forwarded connections over an
//! upgraded connection and opens one backend connection for each with `dial`. The transports are
//! SPDY (`spdy::portforward`, also tunnelled in WebSocket) and kubelet's WebSocket protocol
//! (`ws::portforward`); the copying both ways lives here.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::limits::Limits;
use crate::negotiate::{Negotiated, Protocol};
use crate::options::PortForwardOptions;

/// Bytes read from a backend connection per frame to the client.
const READ_CHUNK: usize = 32 * 1024;

/// Why a port-forward connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error("{0} is not a port-forward protocol")]
    WrongProtocol(&'static str),
    #[error("the WebSocket port-forward protocol needs ports in the query")]
    NoPorts,
    #[error("the connection was idle for {0:?}")]
    Idle(Duration),
}

/// Opens the backend connection for one forwarded connection to `port`.
pub trait Dial: Send + Sync + 'static {
    /// The backend connection.
    type Conn: AsyncRead + AsyncWrite + Send + 'static;
    /// Connects to `port` inside the pod.
    fn dial(&self, port: u16) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl<F, Fut, C> Dial for F
where
    F: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<C>> + Send,
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    type Conn = C;
    fn dial(&self, port: u16) -> impl Future<Output = io::Result<C>> + Send {
        self(port)
    }
}

/// Serves a port-forward connection on `io`, the upgraded connection of a request negotiated with
/// [`crate::negotiate_port_forward`], until the client closes it. `opts` carries the ports of the
/// WebSocket protocol (SPDY clients name a port per stream).
pub async fn serve_port_forward<T, D>(
    io: T,
    negotiated: &Negotiated,
    opts: &PortForwardOptions,
    dial: D,
    limits: &Limits,
) -> Result<(), PortForwardError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    D: Dial,
{
    let dial = Arc::new(dial);
    match negotiated.protocol() {
        Protocol::SpdyPortForward => crate::spdy::portforward::serve(io, dial, limits).await,
        Protocol::WsSpdyPortForward => {
            let ws = crate::ws::accept(io, limits).await;
            let tunnel = crate::ws::tunnel::Tunnel::new(ws);
            crate::spdy::portforward::serve(tunnel, dial, limits).await
        }
        p @ (Protocol::WsPortForward | Protocol::WsPortForwardBase64) => {
            if opts.ports.is_empty() {
                return Err(PortForwardError::NoPorts);
            }
            crate::ws::portforward::serve(io, p, &opts.ports, dial, limits).await
        }
        other => Err(PortForwardError::WrongProtocol(other.name())),
    }
}

/// The client side of one forwarded connection's data, as a transport presents it.
pub(crate) trait ClientSink: Send + Sync {
    /// Sends bytes; false once the client can take no more.
    fn send(&self, data: Bytes) -> impl Future<Output = bool> + Send;
    /// Ends the data towards the client.
    fn finish(&self) -> impl Future<Output = ()> + Send;
}

/// How a forwarded connection ended.
pub(crate) enum Spliced {
    /// Both directions ended (or the backend's, when the client's is not awaited).
    Done,
    /// The backend connection failed; the message goes to the client's error stream.
    Failed(String),
}

/// Copies between a client's data stream and the backend connection. `on_backend_eof` runs
/// once the backend's data is all sent to the client; with `await_client` the copy then goes on
/// until the client's data ends too (SPDY's half-close), otherwise it stops there.
pub(crate) async fn splice<C, K, F>(
    conn: C,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: &K,
    on_backend_eof: F,
    await_client: bool,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Send,
    K: ClientSink,
    F: Future<Output = ()> + Send,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let upstream = async move {
        while let Some(data) = from_client.recv().await {
            wr.write_all(&data).await?;
        }
        wr.shutdown().await
    };
    let downstream = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if !to_client.send(Bytes::copy_from_slice(&buf[..n])).await {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client stream is closed",
                ));
            }
        }
        to_client.finish().await;
        Ok::<(), io::Error>(())
    };
    tokio::pin!(upstream, downstream);
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut downstream => {
                if let Err(e) = r {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Spliced::Done;
                    }
                    return Spliced::Failed(e.to_string());
                }
                break;
            }
            r = &mut upstream, if !up_done => {
                up_done = true;
                if let Err(e) = r {
                    // The backend no longer reads; what it still sends goes on.
                    tracing::debug!("port-forward: writing to the backend: {e}");
                }
            }
        }
    }
    on_backend_eof.await;
    if await_client && !up_done {
        let _ = upstream.await;
    }
    Spliced::Done
}
