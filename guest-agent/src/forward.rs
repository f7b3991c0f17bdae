//! The port forwarder (protocol in `agent_proto::forward`): on its own vsock port, each host
//! stream names a port, gets connected to `127.0.0.1:<port>` — the pod's localhost, since
//! containers share the guest's network namespace — and then carries that connection's bytes.

use std::time::Duration;

use agent_proto::forward::{parse_request, read_line, FORWARD_VSOCK_PORT};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a connect to the pod's localhost may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the host may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Listens on the forwarder's vsock port and serves every stream; a failure to listen is
/// logged (the agent's gRPC service does not depend on it).
pub fn spawn_vsock() {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, FORWARD_VSOCK_PORT);
    let listener = match tokio_vsock::VsockListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("port forwarder: binding vsock port {FORWARD_VSOCK_PORT}: {e}");
            return;
        }
    };
    tracing::info!("port forwarder on vsock:{FORWARD_VSOCK_PORT}");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    tracing::warn!("port forwarder: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Serves one forwarded connection on `stream`.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let line = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut stream)).await {
        Ok(Ok(Some(line))) => line,
        _ => return,
    };
    let port = match parse_request(&line) {
        Ok(p) => p,
        Err(e) => {
            let _ = stream.write_all(format!("ERR {e}\n").as_bytes()).await;
            return;
        }
    };
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let _ = stream.write_all(format!("ERR {e}\n").as_bytes()).await;
            return;
        }
        Err(_) => {
            let msg = format!("ERR connecting to 127.0.0.1:{port} timed out\n");
            let _ = stream.write_all(msg.as_bytes()).await;
            return;
        }
    };
    if stream.write_all(b"OK\n").await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut conn).await {
        tracing::debug!("port forwarder: 127.0.0.1:{port}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn forwards_to_localhost_and_refuses_with_a_reason() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let (mut host, agent) = tokio::io::duplex(1024);
        tokio::spawn(serve(agent));
        host.write_all(format!("PORT {port}\n").as_bytes())
            .await
            .unwrap();
        host.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 7];
        host.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"OK\nping");

        let (mut host, agent) = tokio::io::duplex(1024);
        tokio::spawn(serve(agent));
        host.write_all(b"PORT 0\n").await.unwrap();
        let mut out = String::new();
        host.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("ERR ") && out.contains("not a port"),
            "{out}"
        );
    }
}
