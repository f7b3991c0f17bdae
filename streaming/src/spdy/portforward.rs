//! Port-forward over SPDY/3.1 (`portforward.k8s.io`), as kubelet serves it: each forwarded
//! connection is a pair of streams with the same `requestID` header, an `error` stream and a
//! `data` stream, both naming the `port`. Once both are open the backend is dialled; its bytes go
//! out on the data stream, and a failure is written as text on the error stream. Both streams
//! end (FIN) once the backend's data is all sent.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn::{Connection, Stream, StreamWriter};
use super::header::Headers;
use crate::limits::Limits;
use crate::options::parse_port;
use crate::portforward::{splice, ClientSink, Dial, PortForwardError, Spliced};

/// The headers of a port-forward stream.
pub const PORT: &str = "port";
pub const REQUEST_ID: &str = "requestid";
const STREAM_TYPE: &str = super::exec::STREAM_TYPE;

fn validate(headers: &Headers) -> Result<(), String> {
    let port = headers
        .get(PORT)
        .filter(|p| !p.is_empty())
        .ok_or("\"port\" header is required")?;
    parse_port(port).map_err(|e| e.to_string())?;
    match headers.get(STREAM_TYPE) {
        Some("data" | "error") => Ok(()),
        Some(t) => Err(format!("invalid stream type {t:?}")),
        None => Err("\"streamType\" header is required".to_string()),
    }
}

impl ClientSink for StreamWriter {
    async fn send(&self, data: Bytes) -> bool {
        self.write(data).await.is_ok()
    }
    async fn finish(&self) {
        self.close().await
    }
}

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    deadline: Option<Instant>,
}

/// The pair key: the `requestID` header, or for old clients without it the error stream's id
/// (whose data stream follows it, two ids later).
fn request_id(s: &Stream) -> String {
    if let Some(id) = s.headers.get(REQUEST_ID).filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    match s.headers.get(STREAM_TYPE) {
        Some("data") => format!("stream-{}", s.id.saturating_sub(2)),
        _ => format!("stream-{}", s.id),
    }
}

pub(crate) async fn serve<T, D>(
    io: T,
    dial: Arc<D>,
    limits: &Limits,
) -> Result<(), PortForwardError>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
    D: Dial,
{
    let mut conn = Connection::start(io, limits, Box::new(validate));
    let idle = conn.idle();
    let idle_expired = idle.expired();
    tokio::pin!(idle_expired);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = JoinSet::new();
    let result = loop {
        let next_deadline = pairs.values().filter_map(|p| p.deadline).min();
        tokio::select! {
            s = conn.incoming.recv() => {
                let Some(s) = s else { break Ok(()) };
                let key = request_id(&s);
                let pair = pairs.entry(key.clone()).or_default();
                pair.deadline.get_or_insert(Instant::now() + limits.stream_creation_timeout);
                let slot = if s.headers.get(STREAM_TYPE) == Some("data") {
                    &mut pair.data
                } else {
                    &mut pair.error
                };
                if slot.is_some() {
                    let msg = format!("error processing stream for request {key}: stream type already assigned");
                    tracing::warn!("SPDY port-forward: {msg}");
                    s.tx.reset().await;
                    continue;
                }
                *slot = Some(s);
                if pair.data.is_some() && pair.error.is_some() {
                    let Some(Pair { data: Some(data), error: Some(error), .. }) = pairs.remove(&key) else {
                        continue;
                    };
                    if tasks.len() >= limits.max_port_forwards {
                        let msg = format!(
                            "too many port-forward connections ({} open)", tasks.len()
                        );
                        tracing::warn!("SPDY port-forward: {msg}");
                        let _ = error.tx.write(Bytes::from(msg)).await;
                        error.tx.close().await;
                        data.tx.close().await;
                        continue;
                    }
                    tasks.spawn(forward(data, error, dial.clone()));
                }
            }
            _ = sleep_until_opt(next_deadline) => {
                let now = Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in expired {
                    let Some(pair) = pairs.remove(&key) else { continue };
                    let msg = format!("(request={key}) timed out waiting for streams");
                    tracing::warn!("SPDY port-forward: {msg}");
                    if let Some(error) = pair.error {
                        let _ = error.tx.write(Bytes::from(msg)).await;
                        error.tx.close().await;
                    }
                    if let Some(data) = pair.data {
                        data.tx.reset().await;
                    }
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!("SPDY port-forward: a forwarding task failed: {e}");
                }
            }
            _ = &mut idle_expired => {
                tracing::info!("SPDY port-forward idle for {:?}: closing", limits.idle_timeout);
                break Err(PortForwardError::Idle(limits.idle_timeout));
            }
        }
    };
    tasks.abort_all();
    conn.shutdown(limits.linger).await;
    result
}

async fn forward<D: Dial>(data: Stream, error: Stream, dial: Arc<D>) {
    let port = data
        .headers
        .get(PORT)
        .and_then(|p| parse_port(p).ok())
        .unwrap_or(0);
    let Stream {
        rx: data_rx,
        tx: data_tx,
        ..
    } = data;
    let error_tx = error.tx;
    let outcome = match dial.dial(port).await {
        Ok(backend) => splice(backend, data_rx, &data_tx, error_tx.close(), true).await,
        Err(e) => Spliced::Failed(e.to_string()),
    };
    if let Spliced::Failed(e) = outcome {
        let msg = format!("error forwarding port {port}: {e}");
        tracing::info!("SPDY port-forward: {msg}");
        let _ = error_tx.write(Bytes::from(msg)).await;
    }
    // Both are closed already after a clean end; closing is idempotent.
    error_tx.close().await;
    data_tx.close().await;
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
