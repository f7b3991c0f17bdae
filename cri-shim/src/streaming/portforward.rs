//! Port-forward's backend. Each forwarded connection goes to the pod's **localhost**, as
//! upstream's: through the guest agent's port forwarder (`agent_proto::forward`, a vsock stream
//! on which the agent connects to `127.0.0.1:<port>` in the pod). When the agent has none (a VM
//! started with an older agent), it falls back to a TCP connection from the node's network
//! namespace (where the pod bridge is; `--netns` in tests) to the pod IP at the port.

use agent_proto::forward::{self, ForwardError};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Where a port-forward's connections go.
#[derive(Debug, Clone)]
pub struct PodTarget {
    /// The VM's hybrid vsock socket.
    pub vsock: PathBuf,
    /// The node's network namespace (None = kennel-cri's own).
    pub netns: Option<String>,
    /// The pod IP.
    pub ip: Ipv4Addr,
}

impl PodTarget {
    /// Connects to `port` on the pod's localhost (or, without a forwarder, on the pod IP).
    pub async fn dial(&self, port: u16) -> io::Result<PodConn> {
        let forwarded = tokio::time::timeout(CONNECT_TIMEOUT, forward::connect(&self.vsock, port))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the agent's port forwarder did not answer within {CONNECT_TIMEOUT:?}"),
                )
            })?;
        match forwarded {
            Ok(s) => Ok(PodConn::Agent(s)),
            Err(ForwardError::Unreachable(e)) => {
                tracing::debug!(
                    "port-forward: no agent forwarder ({e}); dialling {}:{port}",
                    self.ip
                );
                dial(self.netns.clone(), self.ip, port)
                    .await
                    .map(PodConn::Tcp)
            }
            Err(ForwardError::Refused(reason)) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("pod localhost:{port}: {reason}"),
            )),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

/// A connection into the pod.
#[derive(Debug)]
pub enum PodConn {
    /// Through the agent's forwarder.
    Agent(UnixStream),
    /// TCP to the pod IP.
    Tcp(TcpStream),
}

impl AsyncRead for PodConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PodConn::Agent(s) => Pin::new(s).poll_read(cx, buf),
            PodConn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PodConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PodConn::Agent(s) => Pin::new(s).poll_write(cx, buf),
            PodConn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PodConn::Agent(s) => Pin::new(s).poll_flush(cx),
            PodConn::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PodConn::Agent(s) => Pin::new(s).poll_shutdown(cx),
            PodConn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How long one connect to the pod may take (a busy emulated guest took over 10 s to answer
/// the forwarder; upstream runtimes allow 30 s for a stream to be set up).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `ip:port` from network namespace `netns` (None = kennel-cri's own).
pub async fn dial(netns: Option<String>, ip: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((ip, port));
    let Some(name) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out(addr))?;
    };
    // A socket belongs to the namespace it was created in: connect on a thread inside it.
    let std_stream = tokio::task::spawn_blocking(move || {
        netns::NetNs::named(&name)
            .run(|| std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .map_err(|e| io::Error::other(format!("network namespace {name}: {e}")))?
    })
    .await
    .map_err(io::Error::other)?
    .map_err(|e| {
        if e.kind() == io::ErrorKind::TimedOut {
            timed_out(addr)
        } else {
            e
        }
    })?;
    std_stream.set_nonblocking(true)?;
    TcpStream::from_std(std_stream)
}

fn timed_out(addr: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connecting to {addr} timed out after {CONNECT_TIMEOUT:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn dials_in_the_current_namespace() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
        });
        let mut s = dial(None, Ipv4Addr::LOCALHOST, port).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"hi");
    }

    #[tokio::test]
    async fn without_a_forwarder_the_pod_ip_is_dialled() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"tcp").await.unwrap();
        });
        let target = PodTarget {
            vsock: "/nonexistent/vsock.sock".into(),
            netns: None,
            ip: Ipv4Addr::LOCALHOST,
        };
        let mut s = target.dial(port).await.unwrap();
        assert!(matches!(s, PodConn::Tcp(_)));
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"tcp");
    }

    #[tokio::test]
    async fn a_missing_namespace_is_named() {
        let e = dial(Some("kennel-no-such-ns".into()), Ipv4Addr::LOCALHOST, 1)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("kennel-no-such-ns"), "{e}");
    }
}
