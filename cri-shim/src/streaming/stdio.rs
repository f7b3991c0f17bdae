//! Agent stdio as byte streams for kennel-stream: the agent's `ReadStdout`/`ReadStderr` chunk
//! streams (and attach subscriptions) as [`AsyncRead`], and the unary `WriteStdin` (one RPC per
//! chunk) + `CloseStdin` behind an [`AsyncWrite`].

use agent_proto::{pb, AgentClient};
use bytes::{Buf, Bytes};
use kennel_stream::{BoxRead, BoxWrite};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_stream::{Stream, StreamExt};

/// Bytes of stdin buffered between the client and the agent.
const STDIN_BUFFER: usize = 64 * 1024;
/// Most bytes per `WriteStdin` call.
const STDIN_CHUNK: usize = 32 * 1024;

/// A boxed stream of output chunks.
pub type Chunks = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Reads a stream of chunks as bytes; EOF when the stream ends.
pub struct ChunkReader {
    chunks: Chunks,
    pending: Bytes,
}

impl ChunkReader {
    /// Wraps a chunk stream.
    pub fn new(chunks: Chunks) -> Self {
        Self {
            chunks,
            pending: Bytes::new(),
        }
    }

    /// An agent output stream (`ReadStdout`/`ReadStderr`), boxed for kennel-stream.
    pub fn agent(s: tonic::Streaming<pb::OutputChunk>) -> BoxRead {
        let chunks = s.map(|r| {
            r.map(|c| Bytes::from(c.data))
                .map_err(|st| io::Error::other(format!("agent output: {}", st.message())))
        });
        Box::pin(Self::new(Box::pin(chunks)))
    }

    /// A fan-out subscription ([`crate::fanout`]), boxed for kennel-stream.
    pub fn subscription(rx: tokio::sync::mpsc::Receiver<Bytes>) -> BoxRead {
        let chunks = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
        Box::pin(Self::new(Box::pin(chunks)))
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.chunks.as_mut().poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Reads an agent output stream to its end and drops it: output the client did not ask for
/// must still be read, or the process would block on a full pipe.
pub fn drain(s: tonic::Streaming<pb::OutputChunk>) {
    tokio::spawn(async move {
        let mut s = s;
        while let Ok(Some(_)) = s.message().await {}
    });
}

/// Stdin of process `exec_id` ("" = the init) of a container: what is written goes to the agent
/// (`WriteStdin`); at EOF (shutdown or drop) the process' stdin is closed (`CloseStdin`) when
/// `close_at_eof`. A failed write ends the writer (later writes fail with `BrokenPipe`).
pub fn stdin_writer(
    agent: AgentClient,
    container_id: String,
    exec_id: String,
    close_at_eof: bool,
) -> BoxWrite {
    let (writer, mut reader) = tokio::io::duplex(STDIN_BUFFER);
    tokio::spawn(async move {
        let mut agent = agent;
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let req = pb::WriteStdinRequest {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
                data: buf[..n].to_vec(),
            };
            if let Err(s) = agent.write_stdin(req).await {
                tracing::debug!(
                    "container {container_id} exec {exec_id:?}: stdin: {}",
                    s.message()
                );
                return;
            }
        }
        if close_at_eof {
            let req = pb::ProcessRequest {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
            };
            if let Err(s) = agent.close_stdin(req).await {
                tracing::debug!(
                    "container {container_id} exec {exec_id:?}: closing stdin: {}",
                    s.message()
                );
            }
        }
    });
    Box::pin(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_read_as_bytes_in_any_buffer_size() {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"world")),
        ];
        let mut r = ChunkReader::new(Box::pin(tokio_stream::iter(chunks)));
        let mut small = [0u8; 4];
        let mut out = Vec::new();
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&small[..n]);
        }
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn a_stream_error_is_a_read_error() {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(io::Error::other("agent output: gone")),
        ];
        let mut r = ChunkReader::new(Box::pin(tokio_stream::iter(chunks)));
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(out, b"a");
        assert!(e.to_string().contains("gone"));
    }

    #[tokio::test]
    async fn subscriptions_end_with_their_channel() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Bytes::from_static(b"tick 1\n")).await.unwrap();
        drop(tx);
        let mut r = ChunkReader::subscription(rx);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "tick 1\n");
    }
}
