//! The server side of a SPDY/3.1 connection: one task reads frames and routes them to streams,
//! one task writes frames. The client opens every stream (odd ids); each accepted stream is
//! answered with SYN_REPLY at once and handed to the protocol layer as a [`Stream`]: a queue of
//! the data the client sends (closed at its FIN or RST) and a [`StreamWriter`].
//!
//! Flow control: WINDOW_UPDATE and SETTINGS are read and ignored, and nothing waits for a send
//! window, as with upstream's spdystream (which neither sends nor honours window updates). The
//! bound is the per-stream queue: a full queue stops the reader, as spdystream's unbuffered
//! channels do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::frame::{goaway, rst, Frame, FrameDecoder, FrameEncoder, FrameError, FLAG_FIN};
use super::frame::{FLAG_UNIDIRECTIONAL, MAX_LENGTH};
use super::header::Headers;
use crate::limits::{IdleTimer, Limits};

/// Outgoing DATA frames carry at most this many bytes.
const MAX_DATA_CHUNK: usize = 64 * 1024;

/// Errors of a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client reset stream {0}")]
    Reset(u32),
    #[error("stream {0} is already closed for writing")]
    WriteClosed(u32),
    #[error("the connection is closed")]
    Closed,
}

/// Decides whether a stream the client opens is accepted; `Err` carries the reason of a refusal.
pub type Validator = Box<dyn Fn(&Headers) -> Result<(), String> + Send + Sync>;

/// A stream the client opened.
pub struct Stream {
    /// Its id (odd).
    pub id: u32,
    /// The headers of its SYN_STREAM.
    pub headers: Headers,
    /// What the client sends; `None` after its FIN, a reset or the connection's end.
    pub rx: mpsc::Receiver<Bytes>,
    /// Sends to the client.
    pub tx: StreamWriter,
}

#[derive(Debug, Default)]
struct StreamState {
    reset: AtomicBool,
    fin_sent: AtomicBool,
}

enum Cmd {
    Frame(Frame),
    Shutdown(oneshot::Sender<()>),
}

/// The sending side of one stream; clones share it.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    cmds: mpsc::Sender<Cmd>,
    state: Arc<StreamState>,
}

impl StreamWriter {
    /// Sends `data` (in DATA frames of at most 64 KiB).
    pub async fn write(&self, data: Bytes) -> Result<(), ConnError> {
        if self.state.reset.load(Ordering::Acquire) {
            return Err(ConnError::Reset(self.id));
        }
        if self.state.fin_sent.load(Ordering::Acquire) {
            return Err(ConnError::WriteClosed(self.id));
        }
        let mut data = data;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_CHUNK));
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Ends this side of the stream (an empty DATA frame with FIN); later calls do nothing.
    pub async fn close(&self) {
        if self.state.reset.load(Ordering::Acquire)
            || self.state.fin_sent.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let _ = self
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
    }

    /// Resets the stream (RST_STREAM with CANCEL).
    pub async fn reset(&self) {
        if self.state.reset.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self
            .send(Frame::RstStream {
                stream_id: self.id,
                status: rst::CANCEL,
            })
            .await;
    }

    /// True once the client reset the stream.
    pub fn is_reset(&self) -> bool {
        self.state.reset.load(Ordering::Acquire)
    }

    async fn send(&self, frame: Frame) -> Result<(), ConnError> {
        self.cmds
            .send(Cmd::Frame(frame))
            .await
            .map_err(|_| ConnError::Closed)
    }
}

/// A live SPDY connection (server side). Dropping it stops both of its tasks.
pub struct Connection {
    /// The streams the client opened and the validator accepted, in order.
    pub incoming: mpsc::Receiver<Stream>,
    closed: watch::Receiver<bool>,
    cmds: mpsc::Sender<Cmd>,
    last_accepted: Arc<AtomicU32>,
    idle: Arc<IdleTimer>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    /// Starts serving `io`, an upgraded connection, accepting the streams `validate` allows.
    pub fn start<T>(io: T, limits: &Limits, validate: Validator) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (incoming_tx, incoming_rx) = mpsc::channel(16);
        let (closed_tx, closed_rx) = watch::channel(false);
        let closed_tx = Arc::new(closed_tx);
        let idle = Arc::new(IdleTimer::new(limits.idle_timeout));
        let last_accepted = Arc::new(AtomicU32::new(0));
        let reader = Reader {
            decoder: FrameDecoder::new(limits.max_frame_len.min(MAX_LENGTH)),
            streams: HashMap::new(),
            last_id: 0,
            goaway: false,
            cmds: cmd_tx.clone(),
            incoming: incoming_tx,
            validate,
            queue: limits.stream_queue.max(1),
            max_streams: limits.max_streams,
            idle: idle.clone(),
            last_accepted: last_accepted.clone(),
        };
        let reader = {
            let closed = closed_tx.clone();
            tokio::spawn(async move {
                match reader.run(read_half).await {
                    Ok(()) => tracing::debug!("SPDY client closed the connection"),
                    Err(e) => tracing::warn!("SPDY connection ends: {e}"),
                }
                closed.send_replace(true);
            })
        };
        let writer = {
            let closed = closed_tx;
            let idle = idle.clone();
            tokio::spawn(async move {
                if let Err(e) = write_loop(write_half, cmd_rx, &idle).await {
                    tracing::debug!("SPDY connection write ends: {e}");
                    closed.send_replace(true);
                }
            })
        };
        Connection {
            incoming: incoming_rx,
            closed: closed_rx,
            cmds: cmd_tx,
            last_accepted,
            idle,
            reader,
            writer,
        }
    }

    /// Resolves once the client's side of the connection ended (EOF, error or a malformed frame).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.clone();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// True once the client's side ended.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// The idle timer of this connection.
    pub fn idle(&self) -> Arc<IdleTimer> {
        self.idle.clone()
    }

    /// Ends the connection cleanly: GOAWAY, flush, close the sending side, then wait up to
    /// `linger` for the client to close its side.
    pub async fn shutdown(self, linger: Duration) {
        let last_good = self.last_accepted.load(Ordering::Acquire);
        let _ = self
            .cmds
            .send(Cmd::Frame(Frame::GoAway {
                last_good,
                status: goaway::OK,
            }))
            .await;
        let (ack_tx, ack_rx) = oneshot::channel();
        if self.cmds.send(Cmd::Shutdown(ack_tx)).await.is_ok() {
            let _ = tokio::time::timeout(linger, ack_rx).await;
        }
        let _ = tokio::time::timeout(linger, self.closed()).await;
    }
}

struct Entry {
    tx: Option<mpsc::Sender<Bytes>>,
    state: Arc<StreamState>,
}

struct Reader {
    decoder: FrameDecoder,
    streams: HashMap<u32, Entry>,
    last_id: u32,
    goaway: bool,
    cmds: mpsc::Sender<Cmd>,
    incoming: mpsc::Sender<Stream>,
    validate: Validator,
    queue: usize,
    max_streams: usize,
    idle: Arc<IdleTimer>,
    last_accepted: Arc<AtomicU32>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut r: R) -> Result<(), ConnError> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let result = async {
            loop {
                while let Some(frame) = self.decoder.decode(&mut buf)? {
                    self.idle.touch();
                    self.handle(frame).await;
                }
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                if r.read_buf(&mut buf).await? == 0 {
                    if buf.is_empty() {
                        return Ok(());
                    }
                    return Err(ConnError::Frame(FrameError::Truncated(buf.len())));
                }
            }
        }
        .await;
        if let Err(ConnError::Frame(_)) = &result {
            let _ = self.cmds.try_send(Cmd::Frame(Frame::GoAway {
                last_good: self.last_id,
                status: goaway::PROTOCOL_ERROR,
            }));
        }
        // Every stream's queue closes with the connection.
        for entry in self.streams.values() {
            entry.state.reset.store(true, Ordering::Release);
        }
        self.streams.clear();
        result
    }

    async fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => self.open(stream_id, flags, headers).await,
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let Some(entry) = self.streams.get_mut(&stream_id) else {
                    tracing::debug!("SPDY DATA for unknown stream {stream_id} dropped");
                    return;
                };
                if !data.is_empty() {
                    if let Some(tx) = &entry.tx {
                        // A receiver that went away just drops what follows.
                        if tx.send(data).await.is_err() {
                            entry.tx = None;
                        }
                    }
                }
                if flags & FLAG_FIN != 0 {
                    entry.tx = None;
                    if entry.state.fin_sent.load(Ordering::Acquire) {
                        self.streams.remove(&stream_id);
                    }
                }
            }
            Frame::RstStream { stream_id, status } => {
                if let Some(entry) = self.streams.remove(&stream_id) {
                    tracing::debug!("SPDY client reset stream {stream_id} (status {status})");
                    entry.state.reset.store(true, Ordering::Release);
                }
            }
            Frame::Ping { id } => {
                // Client pings have odd ids; an even id would answer a ping of ours (we send none).
                if id % 2 == 1 {
                    let _ = self.cmds.send(Cmd::Frame(Frame::Ping { id })).await;
                }
            }
            Frame::GoAway { .. } => self.goaway = true,
            Frame::SynReply { stream_id, .. } => {
                tracing::debug!(
                    "SPDY SYN_REPLY for stream {stream_id} ignored (the server opens none)"
                )
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Headers { .. } => {}
        }
    }

    async fn open(&mut self, id: u32, flags: u8, headers: Headers) {
        if id.is_multiple_of(2) || id <= self.last_id {
            tracing::warn!(
                "SPDY client opened stream {id} out of order (last {})",
                self.last_id
            );
            self.refuse(id, rst::PROTOCOL_ERROR).await;
            return;
        }
        self.last_id = id;
        if self.goaway || self.incoming.is_closed() {
            self.refuse(id, rst::REFUSED_STREAM).await;
            return;
        }
        self.streams.retain(|_, e| {
            !(e.state.reset.load(Ordering::Acquire)
                || (e.tx.is_none() && e.state.fin_sent.load(Ordering::Acquire)))
        });
        if self.streams.len() >= self.max_streams {
            tracing::warn!(
                "SPDY stream {id} refused: {} streams open",
                self.streams.len()
            );
            self.refuse(id, rst::REFUSED_STREAM).await;
            return;
        }
        if let Err(reason) = (self.validate)(&headers) {
            tracing::warn!("SPDY stream {id} rejected: {reason}");
            self.refuse(id, rst::REFUSED_STREAM).await;
            return;
        }
        let (tx, rx) = mpsc::channel(self.queue);
        let state = Arc::new(StreamState::default());
        if flags & FLAG_UNIDIRECTIONAL != 0 {
            state.fin_sent.store(true, Ordering::Release);
        }
        let reply = Frame::SynReply {
            stream_id: id,
            flags: 0,
            headers: Headers::default(),
        };
        if self.cmds.send(Cmd::Frame(reply)).await.is_err() {
            return;
        }
        self.last_accepted.store(id, Ordering::Release);
        let peer_done = flags & FLAG_FIN != 0;
        self.streams.insert(
            id,
            Entry {
                tx: (!peer_done).then_some(tx),
                state: state.clone(),
            },
        );
        let stream = Stream {
            id,
            headers,
            rx,
            tx: StreamWriter {
                id,
                cmds: self.cmds.clone(),
                state,
            },
        };
        if self.incoming.send(stream).await.is_err() {
            tracing::debug!("SPDY stream {id} arrived after the protocol stopped accepting");
        }
    }

    async fn refuse(&self, stream_id: u32, status: u32) {
        let _ = self
            .cmds
            .send(Cmd::Frame(Frame::RstStream { stream_id, status }))
            .await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut cmds: mpsc::Receiver<Cmd>,
    idle: &IdleTimer,
) -> Result<(), ConnError> {
    let mut encoder = FrameEncoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(cmd) = cmds.recv().await {
        let mut next = Some(cmd);
        // Batch what is already queued into one write.
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(frame) => encoder.encode(&frame, &mut buf)?,
                Cmd::Shutdown(ack) => {
                    w.write_all(&buf).await?;
                    w.flush().await?;
                    let _ = w.shutdown().await;
                    let _ = ack.send(());
                    return Ok(());
                }
            }
            if buf.len() >= 256 * 1024 {
                break;
            }
            next = cmds.try_recv().ok();
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        buf.clear();
        idle.touch();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// The client end of a connection under test.
    struct Client {
        io: DuplexStream,
        enc: FrameEncoder,
        dec: FrameDecoder,
        buf: BytesMut,
    }

    impl Client {
        fn new(io: DuplexStream) -> Self {
            Self {
                io,
                enc: FrameEncoder::new(),
                dec: FrameDecoder::new(1 << 20),
                buf: BytesMut::new(),
            }
        }
        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            self.enc.encode(&frame, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        }
    }

    fn syn(id: u32, kind: &str) -> Frame {
        let mut headers = Headers::default();
        headers.push("streamType", kind);
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers,
        }
    }

    fn start(limits: &Limits) -> (Connection, Client) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let validate: Validator = Box::new(|h: &Headers| match h.get("streamtype") {
            Some("ok") => Ok(()),
            _ => Err("not ok".into()),
        });
        (Connection::start(a, limits, validate), Client::new(b))
    }

    #[tokio::test]
    async fn streams_replies_data_and_pings() {
        let (mut conn, mut client) = start(&Limits::default());
        client.send(syn(1, "ok")).await;
        assert!(matches!(
            client.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        let mut stream = conn.incoming.recv().await.unwrap();
        assert_eq!(stream.id, 1);
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            })
            .await;
        assert_eq!(stream.rx.recv().await.unwrap(), "hello");
        assert!(stream.rx.recv().await.is_none(), "FIN ends the queue");
        stream.tx.write(Bytes::from_static(b"back")).await.unwrap();
        stream.tx.close().await;
        assert_eq!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"back")
            })
        );
        assert_eq!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new()
            })
        );
        assert!(stream.tx.write(Bytes::from_static(b"late")).await.is_err());
        client.send(Frame::Ping { id: 7 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 7 }));
        // Rejected and out-of-order streams are reset.
        client.send(syn(3, "nope")).await;
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: rst::REFUSED_STREAM
            })
        );
        client.send(syn(2, "ok")).await;
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 2,
                status: rst::PROTOCOL_ERROR
            })
        );
        conn.shutdown(Duration::from_millis(100)).await;
        assert!(matches!(
            client.recv().await,
            Some(Frame::GoAway { last_good: 1, .. })
        ));
        assert_eq!(client.recv().await, None);
    }

    #[tokio::test]
    async fn client_reset_fails_writes() {
        let (mut conn, mut client) = start(&Limits::default());
        client.send(syn(1, "ok")).await;
        client.recv().await;
        let stream = conn.incoming.recv().await.unwrap();
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: rst::CANCEL,
            })
            .await;
        let mut rx = stream.rx;
        assert!(rx.recv().await.is_none());
        assert!(stream.tx.is_reset());
        assert!(matches!(
            stream.tx.write(Bytes::from_static(b"x")).await,
            Err(ConnError::Reset(1))
        ));
    }

    #[tokio::test]
    async fn malformed_input_closes_the_connection() {
        for garbage in [
            &b"\x80\x03\x00\x05\x00\x00\x00\x00"[..], // unknown type
            &b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"[..], // SPDY/2
            &b"\x00\x00\x00\x01\x00\xff\xff\xff"[..], // larger than the limit
            &b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01\xde\xad\xbe\xef"[..], // bad zlib
        ] {
            let (conn, mut client) = start(&Limits::default());
            client.io.write_all(garbage).await.unwrap();
            conn.closed().await;
            assert!(conn.is_closed());
            assert!(matches!(
                client.recv().await,
                Some(Frame::GoAway {
                    status: goaway::PROTOCOL_ERROR,
                    ..
                })
            ));
        }
        // A frame cut short by the end of the connection.
        let (conn, mut client) = start(&Limits::default());
        client
            .io
            .write_all(b"\x80\x03\x00\x06\x00\x00")
            .await
            .unwrap();
        client.io.shutdown().await.unwrap();
        conn.closed().await;
    }

    #[tokio::test]
    async fn stream_limit() {
        let limits = Limits {
            max_streams: 1,
            ..Limits::default()
        };
        let (mut conn, mut client) = start(&limits);
        client.send(syn(1, "ok")).await;
        client.recv().await;
        let _first = conn.incoming.recv().await.unwrap();
        client.send(syn(3, "ok")).await;
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: rst::REFUSED_STREAM
            })
        );
    }
}
