//! Host-side client: connects the generated `AgentClient` over a Unix socket, or over a
//! Firecracker-style hybrid vsock Unix socket (`CONNECT <port>\n` → `OK <port>\n`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pb::agent_client::AgentClient as RawClient;

/// The generated gRPC client over a tonic channel.
pub type AgentClient = RawClient<Channel>;

/// Errors connecting to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The Unix socket could not be reached.
    #[error("connecting to {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The hybrid vsock handshake failed.
    #[error("vsock handshake with {path} port {port}: {reason}")]
    Handshake {
        /// Socket path.
        path: PathBuf,
        /// Guest port.
        port: u32,
        /// What went wrong.
        reason: String,
    },
    /// The gRPC channel could not be set up.
    #[error("gRPC transport")]
    Transport(#[from] tonic::transport::Error),
}

/// Connects to an agent serving gRPC directly on the Unix socket `path`.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<AgentClient, ClientError> {
    let path = path.as_ref().to_path_buf();
    // Fail early with a clear error when the socket is not there.
    UnixStream::connect(&path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.clone(),
            source,
        })?;
    let channel = endpoint()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(RawClient::new(channel))
}

/// Connects to the agent listening on vsock `port` in the guest, through the VMM's hybrid
/// vsock Unix socket at `path`.
pub async fn connect_hybrid_vsock(
    path: impl AsRef<Path>,
    port: u32,
) -> Result<AgentClient, ClientError> {
    let path = path.as_ref().to_path_buf();
    // Probe once so the caller gets a precise handshake error instead of a transport one.
    hybrid_vsock_stream(&path, port).await?;
    let channel = endpoint()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                hybrid_vsock_stream(&path, port)
                    .await
                    .map(TokioIo::new)
                    .map_err(std::io::Error::other)
            }
        }))
        .await?;
    Ok(RawClient::new(channel))
}

/// Connects to an agent over AF_VSOCK (`cid`, `port`): from a host with vhost-vsock, or
/// from inside the guest itself over the loopback transport (CID 1).
pub async fn connect_vsock(cid: u32, port: u32) -> Result<AgentClient, ClientError> {
    let channel = endpoint()
        .connect_with_connector(tower::service_fn(move |_: Uri| async move {
            tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(cid, port))
                .await
                .map(TokioIo::new)
        }))
        .await?;
    Ok(RawClient::new(channel))
}

/// Opens one stream to guest vsock `port` through a hybrid vsock Unix socket.
pub async fn hybrid_vsock_stream(path: &Path, port: u32) -> Result<UnixStream, ClientError> {
    let handshake = |reason: String| ClientError::Handshake {
        path: path.to_path_buf(),
        port,
        reason,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| handshake(e.to_string()))?;
    // Read the reply one byte at a time so no gRPC bytes are consumed past the newline.
    let mut line = Vec::new();
    let mut reader = BufReader::with_capacity(1, &mut stream);
    loop {
        let n = reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| handshake(e.to_string()))?;
        if n == 0 || line.ends_with(b"\n") || line.len() > 64 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end();
    if !text.starts_with("OK ") {
        return Err(handshake(format!("unexpected reply {text:?}")));
    }
    Ok(stream)
}

fn endpoint() -> Endpoint {
    // The URI is not used for routing: the connector decides where bytes go.
    Endpoint::from_static("http://agent.invalid")
        .connect_timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn hybrid_handshake_ok_and_rejected() {
        let dir = std::env::temp_dir().join(format!("agent-proto-hs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("v.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            for reply in ["OK 1024\n", "NOPE\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 13];
                s.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"CONNECT 1024\n");
                s.write_all(reply.as_bytes()).await.unwrap();
                s.write_all(b"x").await.unwrap();
            }
        });
        let mut s = hybrid_vsock_stream(&sock, 1024).await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x", "bytes after the handshake line are not consumed");
        let err = hybrid_vsock_stream(&sock, 1024).await.unwrap_err();
        assert!(err.to_string().contains("unexpected reply"), "{err}");
        server.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
