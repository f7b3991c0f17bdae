//! Serving exec and attach: [`serve_exec`] runs one session over an upgraded connection, whatever
//! the negotiated protocol. The transports (`spdy::exec`, `ws::exec`) turn the connection into
//! the client's streams; the driver here connects them to the backend's [`ExecSession`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::limits::{IdleTimer, Limits};
use crate::negotiate::{Negotiated, Protocol};
use crate::options::ExecOptions;
use crate::resize::{ResizeDecoder, TerminalSize};
use crate::session::{BoxRead, ExecSession};
use crate::status::ExitStatus;

/// Bytes read from the process per message to the client.
const READ_CHUNK: usize = 32 * 1024;

/// Why an exec or attach session ended without a status sent.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0} is not an exec or attach protocol")]
    WrongProtocol(&'static str),
    #[error("the client went away")]
    ClientGone,
    #[error("the connection was idle for {0:?}")]
    Idle(Duration),
    #[error("the client did not open the {missing} stream(s) within {timeout:?}")]
    StreamsTimeout { missing: String, timeout: Duration },
}

/// Serves one exec session on `io`, the upgraded connection of a request negotiated with
/// [`crate::negotiate_exec`]. Returns how the process ended (the status the client was sent).
pub async fn serve_exec<T, S>(
    io: T,
    negotiated: &Negotiated,
    opts: &ExecOptions,
    session: S,
    limits: &Limits,
) -> Result<ExitStatus, ExecError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: ExecSession,
{
    let protocol = negotiated.protocol();
    match protocol {
        Protocol::SpdyV4 | Protocol::SpdyV3 | Protocol::SpdyV2 => {
            crate::spdy::exec::serve(io, protocol, opts, session, limits).await
        }
        Protocol::WsV5
        | Protocol::WsV4
        | Protocol::WsV4Base64
        | Protocol::WsV1
        | Protocol::WsV1Base64 => crate::ws::exec::serve(io, protocol, opts, session, limits).await,
        other => Err(ExecError::WrongProtocol(other.name())),
    }
}

/// Attach uses the framing of exec; the session attaches instead of starting a process.
pub async fn serve_attach<T, S>(
    io: T,
    negotiated: &Negotiated,
    opts: &ExecOptions,
    session: S,
    limits: &Limits,
) -> Result<ExitStatus, ExecError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: ExecSession,
{
    serve_exec(io, negotiated, opts, session, limits).await
}

/// The output channels towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chan {
    Stdout,
    Stderr,
    Error,
}

/// What the driver sends to the transport.
pub(crate) enum Out {
    Data(Chan, Bytes),
    /// No more data on this channel.
    Close(Chan),
}

/// The client's side of a session, as a transport presents it.
pub(crate) struct ClientIo {
    /// The client's stdin; ends at its close (or the connection's end).
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Raw resize-stream bytes.
    pub resize: Option<mpsc::Receiver<Bytes>>,
    pub out: mpsc::Sender<Out>,
    /// Resolves when the client's connection ended.
    pub gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub idle: Arc<IdleTimer>,
    /// v4 and later: `metav1.Status` JSON; before: text.
    pub json_status: bool,
}

/// Runs the session to its end and sends the status.
pub(crate) async fn drive<S: ExecSession>(
    client: ClientIo,
    opts: &ExecOptions,
    mut session: S,
    limits: &Limits,
) -> Result<ExitStatus, ExecError> {
    let ClientIo {
        stdin,
        mut resize,
        out,
        mut gone,
        idle,
        json_status,
    } = client;
    let mut decoder = ResizeDecoder::new();
    let idle_expired = idle.expired();
    tokio::pin!(idle_expired);

    // With a tty, start the process at the client's terminal size when it comes in time.
    let mut initial = None;
    if opts.tty {
        if let Some(rx) = resize.as_mut() {
            let first = async {
                while let Some(raw) = rx.recv().await {
                    match decoder.push(&raw) {
                        Ok(sizes) if !sizes.is_empty() => return sizes.last().copied(),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("ignoring resize events: {e}");
                            return None;
                        }
                    }
                }
                None
            };
            tokio::select! {
                size = first => initial = size,
                _ = tokio::time::sleep(limits.initial_resize_wait) => {}
                _ = &mut gone => return Err(ExecError::ClientGone),
            }
        }
    }

    let io = match session.start(initial).await {
        Ok(io) => io,
        Err(e) => {
            let status = ExitStatus::Failed(e.to_string());
            send_status(&out, &status, json_status).await;
            return Ok(status);
        }
    };

    let stdin_pump = async move {
        let (Some(mut rx), Some(mut w)) = (stdin, io.stdin) else {
            return;
        };
        while let Some(data) = rx.recv().await {
            if let Err(e) = w.write_all(&data).await {
                tracing::debug!("process stdin closed: {e}");
                return;
            }
            let _ = w.flush().await;
        }
        let _ = w.shutdown().await;
    };
    let stdout_pump = pump(io.stdout, Chan::Stdout, out.clone());
    let stderr_pump = pump(io.stderr, Chan::Stderr, out.clone());
    let outputs = futures_util::future::join(stdout_pump, stderr_pump);
    tokio::pin!(stdin_pump, outputs);

    let mut exit: Option<ExitStatus> = None;
    let mut outputs_done = false;
    let mut stdin_done = false;
    let mut drain_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let mut sizes: Vec<TerminalSize> = Vec::new();
        tokio::select! {
            biased;
            _ = &mut gone => {
                session.terminate().await;
                return Err(ExecError::ClientGone);
            }
            _ = &mut idle_expired => {
                tracing::info!("exec session idle for {:?}: terminating", limits.idle_timeout);
                session.terminate().await;
                return Err(ExecError::Idle(limits.idle_timeout));
            }
            r = session.wait(), if exit.is_none() => {
                exit = Some(match r {
                    Ok(code) => ExitStatus::Code(code),
                    Err(e) => ExitStatus::Failed(e.to_string()),
                });
                drain_deadline = Some(Box::pin(tokio::time::sleep(limits.output_drain_timeout)));
            }
            _ = &mut outputs, if !outputs_done => outputs_done = true,
            _ = &mut stdin_pump, if !stdin_done => stdin_done = true,
            raw = recv_opt(&mut resize) => match raw {
                Some(raw) => match decoder.push(&raw) {
                    Ok(s) => sizes = s,
                    Err(e) => {
                        tracing::warn!("ignoring further resize events: {e}");
                        resize = None;
                    }
                },
                None => resize = None,
            },
            _ = sleep_opt(&mut drain_deadline) => {
                tracing::warn!(
                    "process output still open {:?} after its exit: sending the status",
                    limits.output_drain_timeout
                );
                outputs_done = true;
            }
        }
        for size in sizes {
            session.resize(size).await;
        }
        if exit.is_some() && outputs_done {
            break;
        }
    }
    let status = exit.unwrap_or(ExitStatus::Code(0));
    send_status(&out, &status, json_status).await;
    Ok(status)
}

/// Copies one process output to its channel, then closes the channel.
async fn pump(reader: Option<BoxRead>, chan: Chan, out: mpsc::Sender<Out>) {
    if let Some(mut r) = reader {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if out
                        .send(Out::Data(chan, Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("process {chan:?} ends: {e}");
                    break;
                }
            }
        }
    }
    let _ = out.send(Out::Close(chan)).await;
}

async fn send_status(out: &mpsc::Sender<Out>, status: &ExitStatus, json: bool) {
    let bytes = if json {
        status.to_json()
    } else {
        status.to_text()
    };
    if !bytes.is_empty() {
        let _ = out.send(Out::Data(Chan::Error, Bytes::from(bytes))).await;
    }
    for chan in [Chan::Error, Chan::Stdout, Chan::Stderr] {
        let _ = out.send(Out::Close(chan)).await;
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match sleep {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}
