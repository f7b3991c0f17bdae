//! Exec and attach over the WebSocket channel protocols. Channels 0–4 are stdin, stdout, stderr,
//! error and resize; the server announces itself with an empty message on the lowest channel it
//! writes, as kubelet does, and ends the session with the status on the error channel followed by
//! a normal close. No close signal is sent to the client: upstream clients drop messages for
//! channel 255 with an error, and they see every channel end at the close.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::channel::{decode, encode, id, Codec, Inbound};
use crate::exec::{drive, Chan, ClientIo, ExecError, Out};
use crate::limits::{IdleTimer, Limits};
use crate::negotiate::Protocol;
use crate::options::ExecOptions;
use crate::session::ExecSession;
use crate::status::ExitStatus;

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
    let codec = match protocol {
        Protocol::WsV4Base64 | Protocol::WsV1Base64 => Codec::Base64,
        _ => Codec::Binary,
    };
    let close_signals = protocol == Protocol::WsV5;
    let ws = super::accept(io, limits).await;
    let (mut sink, mut source) = ws.split();
    let idle = std::sync::Arc::new(IdleTimer::new(limits.idle_timeout));
    let queue = limits.stream_queue.max(1);
    let (stdin_tx, stdin_rx) = mpsc::channel(queue);
    let (resize_tx, resize_rx) = mpsc::channel(queue);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(queue);
    let (gone_tx, mut gone_rx) = watch::channel(false);

    let reader = {
        let idle = idle.clone();
        let mut stdin_tx = opts.stdin.then_some(stdin_tx);
        let mut resize_tx = opts.tty.then_some(resize_tx);
        async move {
            while let Some(msg) = source.next().await {
                idle.touch();
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!("WebSocket exec: {e}");
                        break;
                    }
                };
                match decode(msg, codec, close_signals) {
                    Ok(Inbound::Data { channel, data }) => {
                        let tx = match channel {
                            id::STDIN => &mut stdin_tx,
                            id::RESIZE => &mut resize_tx,
                            _ => continue,
                        };
                        if let Some(t) = tx {
                            if t.send(data).await.is_err() {
                                *tx = None;
                            }
                        }
                    }
                    Ok(Inbound::Close { channel }) => match channel {
                        id::STDIN => stdin_tx = None,
                        id::RESIZE => resize_tx = None,
                        _ => {}
                    },
                    Ok(Inbound::Nothing) => {}
                    Ok(Inbound::Closed) => break,
                    Err(e) => {
                        tracing::warn!("WebSocket exec: closing on a malformed message: {e}");
                        break;
                    }
                }
            }
            gone_tx.send_replace(true);
        }
    };

    let writer = {
        let idle = idle.clone();
        let first = if opts.stdout {
            id::STDOUT
        } else if opts.stderr {
            id::STDERR
        } else {
            id::ERROR
        };
        async move {
            if sink.send(encode(first, &[], codec)).await.is_ok() {
                while let Some(out) = out_rx.recv().await {
                    let Out::Data(chan, data) = out else {
                        continue;
                    };
                    let ch = match chan {
                        Chan::Stdout => id::STDOUT,
                        Chan::Stderr => id::STDERR,
                        Chan::Error => id::ERROR,
                    };
                    if let Err(e) = sink.send(encode(ch, &data, codec)).await {
                        tracing::debug!("WebSocket exec: send failed: {e}");
                        break;
                    }
                    idle.touch();
                }
            }
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
            let _ = sink.close().await;
        }
    };

    let client = ClientIo {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: opts.tty.then_some(resize_rx),
        out: out_tx,
        gone: Box::pin(async move {
            let _ = gone_rx.wait_for(|g| *g).await;
        }),
        idle,
        json_status: matches!(
            protocol,
            Protocol::WsV5 | Protocol::WsV4 | Protocol::WsV4Base64
        ),
    };
    let session_and_writer = async {
        let (r, ()) = tokio::join!(drive(client, opts, session, limits), writer);
        r
    };
    tokio::pin!(reader, session_and_writer);
    let mut reader_done = false;
    let result = loop {
        tokio::select! {
            r = &mut session_and_writer => break r,
            _ = &mut reader, if !reader_done => reader_done = true,
        }
    };
    if !reader_done {
        // Wait for the client's close so the last messages are not cut by a reset.
        let _ = tokio::time::timeout(limits.linger, &mut reader).await;
    }
    result
}
