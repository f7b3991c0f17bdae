//! Connections on the CRI socket: what a client sends passes through an
//! [`AuthorityRewriter`] before tonic's HTTP/2 server reads it, so any `:authority` is accepted
//! (see [`crate::authority`]); what the server writes goes straight to the socket.

use crate::authority::AuthorityRewriter;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// One accepted CRI connection.
pub struct CriConnection {
    inner: UnixStream,
    rewriter: AuthorityRewriter,
    /// Rewritten bytes not yet handed to the reader, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    buf: Vec<u8>,
    eof: bool,
    logged: bool,
}

impl CriConnection {
    /// Wraps an accepted stream.
    pub fn new(inner: UnixStream) -> Self {
        Self {
            inner,
            rewriter: AuthorityRewriter::new(),
            out: Vec::new(),
            out_pos: 0,
            buf: vec![0; READ_CHUNK],
            eof: false,
            logged: false,
        }
    }
}

/// The accepted connections of `listener`, each wrapped in a [`CriConnection`].
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<CriConnection>> {
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|s| s.map(CriConnection::new))
}

impl AsyncRead for CriConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                this.rewriter.finish(&mut this.out);
                continue;
            }
            this.rewriter
                .feed(rb.filled(), &mut this.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if !this.logged && this.rewriter.rewritten() > 0 {
                this.logged = true;
                tracing::debug!(
                    "CRI client sent an :authority h2 refuses; serving it as localhost"
                );
            }
        }
    }
}

impl AsyncWrite for CriConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for CriConnection {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
