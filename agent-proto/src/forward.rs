//! The port forwarder of kennel-agent: a plain byte stream on its own vsock port
//! ([`FORWARD_VSOCK_PORT`]), no gRPC. The host opens a vsock stream to that port, sends one line
//! `PORT <n>\n`; the agent connects to `127.0.0.1:<n>` in the pod's network namespace (the
//! guest's: containers share it) and answers `OK\n` — then the stream carries the connection's
//! bytes both ways, half-close included — or `ERR <reason>\n` and closes. This is how CRI
//! port-forward reaches a server listening only on the pod's localhost, as upstream's does.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::client::{hybrid_vsock_stream, ClientError};

/// The agent's forwarder port (beside the gRPC port, [`crate::DEFAULT_VSOCK_PORT`]).
pub const FORWARD_VSOCK_PORT: u32 = 1025;
/// The longest request or answer line accepted (without its newline).
pub const MAX_LINE: usize = 256;

/// Errors opening a forwarded connection from the host.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The forwarder did not answer the vsock handshake (an agent without one, or no VM).
    #[error("the agent's port forwarder is not reachable")]
    Unreachable(#[source] ClientError),
    /// The agent could not connect to the port.
    #[error("{0}")]
    Refused(String),
    /// The stream failed during the exchange.
    #[error("port forwarder at {path}: {reason}")]
    Protocol {
        /// Hybrid vsock socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Parses a request line (without its newline): the port, or why it is not one.
pub fn parse_request(line: &str) -> Result<u16, String> {
    let p = line
        .strip_prefix("PORT ")
        .ok_or_else(|| format!("expected `PORT <n>`, got {line:?}"))?;
    match p.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{:?} is not a port (1-65535)", p.trim())),
        Ok(port) => Ok(port),
    }
}

/// Reads one line byte by byte (so no data after it is consumed), without its newline; None at
/// EOF before a newline or past [`MAX_LINE`].
pub async fn read_line<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte).await? == 0 || line.len() > MAX_LINE {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        line.push(byte[0]);
    }
}

/// Opens a connection to `port` on the pod's localhost through the agent's forwarder, over the
/// VM's hybrid vsock socket `path`.
pub async fn connect(path: &Path, port: u16) -> Result<UnixStream, ForwardError> {
    let mut s = hybrid_vsock_stream(path, FORWARD_VSOCK_PORT)
        .await
        .map_err(ForwardError::Unreachable)?;
    let protocol = |reason: String| ForwardError::Protocol {
        path: path.to_path_buf(),
        reason,
    };
    s.write_all(format!("PORT {port}\n").as_bytes())
        .await
        .map_err(|e| protocol(e.to_string()))?;
    let answer = read_line(&mut s)
        .await
        .map_err(|e| protocol(e.to_string()))?
        .ok_or_else(|| protocol("closed without an answer".into()))?;
    match answer.strip_prefix("ERR ") {
        _ if answer == "OK" => Ok(s),
        Some(reason) => Err(ForwardError::Refused(reason.to_string())),
        None => Err(protocol(format!("unexpected answer {answer:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[test]
    fn requests() {
        assert_eq!(parse_request("PORT 8080"), Ok(8080));
        for bad in ["PORT 0", "PORT 65536", "PORT x", "port 80", ""] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn host_side_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("v.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            for answer in ["OK\n", "ERR connecting to 127.0.0.1:81: refused\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                assert_eq!(read_line(&mut s).await.unwrap().unwrap(), "CONNECT 1025");
                s.write_all(b"OK 1025\n").await.unwrap();
                let req = read_line(&mut s).await.unwrap().unwrap();
                assert!(parse_request(&req).is_ok(), "{req}");
                s.write_all(answer.as_bytes()).await.unwrap();
                s.write_all(b"data").await.unwrap();
            }
        });
        let mut s = connect(&sock, 80).await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"data", "bytes after the answer are the connection's");
        let e = connect(&sock, 81).await.unwrap_err();
        assert!(
            matches!(&e, ForwardError::Refused(m) if m.contains("refused")),
            "{e}"
        );
        server.await.unwrap();
        let e = connect(&dir.path().join("none.sock"), 80)
            .await
            .unwrap_err();
        assert!(matches!(e, ForwardError::Unreachable(_)), "{e}");
    }
}
