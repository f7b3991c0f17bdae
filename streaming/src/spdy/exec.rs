//! Exec and attach over SPDY/3.1 (`v2`–`v4.channel.k8s.io`): the client opens one stream per
//! channel, each named by its `streamType` header (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`). The session starts once every stream the options call for is open.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::conn::{Connection, Stream, StreamWriter};
use super::header::Headers;
use crate::exec::{drive, Chan, ClientIo, ExecError, Out};
use crate::limits::Limits;
use crate::negotiate::Protocol;
use crate::options::ExecOptions;
use crate::session::ExecSession;
use crate::status::ExitStatus;

/// The header naming a stream's role.
pub const STREAM_TYPE: &str = "streamtype";

const TYPES: [&str; 5] = ["error", "stdin", "stdout", "stderr", "resize"];

fn validate(headers: &Headers) -> Result<(), String> {
    match headers.get(STREAM_TYPE) {
        Some(t) if TYPES.contains(&t) => Ok(()),
        Some(t) => Err(format!("invalid stream type {t:?}")),
        None => Err("\"streamType\" header is required".to_string()),
    }
}

/// The stream types the client opens for these options.
fn expected(protocol: Protocol, opts: &ExecOptions) -> Vec<&'static str> {
    let mut want = vec!["error"];
    if opts.stdin {
        want.push("stdin");
    }
    if opts.stdout {
        want.push("stdout");
    }
    if opts.stderr_stream() {
        want.push("stderr");
    }
    if opts.tty && protocol != Protocol::SpdyV2 {
        want.push("resize");
    }
    want
}

pub(crate) async fn serve<T, S>(
    io: T,
    protocol: Protocol,
    opts: &ExecOptions,
    session: S,
    limits: &Limits,
) -> Result<ExitStatus, ExecError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: ExecSession,
{
    let mut conn = Connection::start(io, limits, Box::new(validate));
    let want = expected(protocol, opts);
    let mut streams: HashMap<&'static str, Stream> = HashMap::new();
    let deadline = tokio::time::sleep(limits.stream_creation_timeout);
    tokio::pin!(deadline);
    while want.iter().any(|t| !streams.contains_key(t)) {
        tokio::select! {
            s = conn.incoming.recv() => {
                let Some(s) = s else {
                    return Err(ExecError::ClientGone);
                };
                let kind = TYPES
                    .into_iter()
                    .find(|t| s.headers.get(STREAM_TYPE) == Some(*t))
                    .unwrap_or("error");
                if streams.contains_key(kind) {
                    tracing::warn!("SPDY exec: a second {kind} stream ({}) reset", s.id);
                    s.tx.reset().await;
                } else {
                    streams.insert(kind, s);
                }
            }
            _ = &mut deadline => {
                let missing: Vec<&str> =
                    want.iter().copied().filter(|t| !streams.contains_key(t)).collect();
                tracing::warn!("SPDY exec: timed out waiting for the {missing:?} stream(s)");
                conn.shutdown(limits.linger).await;
                return Err(ExecError::StreamsTimeout {
                    missing: missing.join(", "),
                    timeout: limits.stream_creation_timeout,
                });
            }
        }
    }
    // Any stream the client opens from now on is refused.
    conn.incoming.close();

    let mut take = |t: &str| streams.remove(t);
    let stdin = take("stdin").map(|s| s.rx);
    let resize = take("resize").map(|s| s.rx);
    let writers: [(Chan, Option<StreamWriter>); 3] = [
        (Chan::Stdout, take("stdout").map(|s| s.tx)),
        (Chan::Stderr, take("stderr").map(|s| s.tx)),
        (Chan::Error, take("error").map(|s| s.tx)),
    ];
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(limits.stream_queue.max(1));
    let to_client = async move {
        let writer = |chan: Chan| {
            writers
                .iter()
                .find(|(c, _)| *c == chan)
                .and_then(|(_, w)| w.as_ref())
        };
        while let Some(out) = out_rx.recv().await {
            match out {
                Out::Data(chan, data) => {
                    if let Some(w) = writer(chan) {
                        if let Err(e) = w.write(data).await {
                            tracing::debug!("SPDY exec: {chan:?} not delivered: {e}");
                        }
                    }
                }
                Out::Close(chan) => {
                    if let Some(w) = writer(chan) {
                        w.close().await;
                    }
                }
            }
        }
    };
    let client = ClientIo {
        stdin,
        resize,
        out: out_tx,
        gone: Box::pin(conn.closed()),
        idle: conn.idle(),
        json_status: protocol == Protocol::SpdyV4,
    };
    let (result, ()) = tokio::join!(drive(client, opts, session, limits), to_client);
    if result.is_ok() {
        conn.shutdown(limits.linger).await;
    }
    result
}
