//! Kubelet's WebSocket port-forward protocol (`v4.channel.k8s.io` and its base64 form): the
//! query's ports get two channels each, data on `2i` and errors on `2i+1`. The first message the
//! server sends on every channel is the port, two bytes little-endian. Each port is one backend
//! connection; once every backend connection has ended the server closes the WebSocket.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::channel::{decode, encode, Codec, Inbound};
use crate::limits::{IdleTimer, Limits};
use crate::negotiate::Protocol;
use crate::portforward::{splice, ClientSink, Dial, PortForwardError, Spliced};

struct WsSink {
    out: mpsc::Sender<Message>,
    channel: u8,
    codec: Codec,
}

impl ClientSink for WsSink {
    async fn send(&self, data: Bytes) -> bool {
        self.out
            .send(encode(self.channel, &data, self.codec))
            .await
            .is_ok()
    }
    async fn finish(&self) {}
}

pub(crate) async fn serve<T, D>(
    io: T,
    protocol: Protocol,
    ports: &[u16],
    dial: Arc<D>,
    limits: &Limits,
) -> Result<(), PortForwardError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    D: Dial,
{
    let codec = if protocol == Protocol::WsPortForwardBase64 {
        Codec::Base64
    } else {
        Codec::Binary
    };
    // Two channels per port, and channel numbers are one byte.
    let ports = &ports[..ports.len().min(limits.max_port_forwards).min(128)];
    let ws = super::accept(io, limits).await;
    let (mut sink, mut source) = ws.split();
    let idle = Arc::new(IdleTimer::new(limits.idle_timeout));
    let queue = limits.stream_queue.max(1);
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(queue);

    let writer = {
        let idle = idle.clone();
        let prefixes: Vec<Message> = ports
            .iter()
            .enumerate()
            .flat_map(|(i, port)| {
                let p = port.to_le_bytes();
                [
                    encode(2 * i as u8, &p, codec),
                    encode(2 * i as u8 + 1, &p, codec),
                ]
            })
            .collect();
        async move {
            for m in prefixes {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
                idle.touch();
            }
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
            let _ = sink.close().await;
        }
    };

    let mut data_txs = Vec::with_capacity(ports.len());
    let mut tasks = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(queue);
        data_txs.push(Some(tx));
        let sink = WsSink {
            out: out_tx.clone(),
            channel: 2 * i as u8,
            codec,
        };
        let errors = WsSink {
            out: out_tx.clone(),
            channel: 2 * i as u8 + 1,
            codec,
        };
        let dial = dial.clone();
        tasks.spawn(async move {
            let outcome = match dial.dial(port).await {
                Ok(backend) => splice(backend, rx, &sink, async {}, false).await,
                Err(e) => Spliced::Failed(e.to_string()),
            };
            if let Spliced::Failed(e) = outcome {
                let msg = format!("error forwarding port {port}: {e}");
                tracing::info!("WebSocket port-forward: {msg}");
                errors.send(Bytes::from(msg)).await;
            }
        });
    }
    drop(out_tx);

    let reader = {
        let idle = idle.clone();
        async move {
            while let Some(msg) = source.next().await {
                idle.touch();
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!("WebSocket port-forward: {e}");
                        break;
                    }
                };
                match decode(msg, codec, false) {
                    Ok(Inbound::Data { channel, data }) => {
                        let index = usize::from(channel / 2);
                        if channel % 2 != 0 || index >= data_txs.len() {
                            continue;
                        }
                        let failed = match &data_txs[index] {
                            Some(tx) => tx.send(data).await.is_err(),
                            None => false,
                        };
                        if failed {
                            data_txs[index] = None;
                        }
                    }
                    Ok(Inbound::Closed) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(
                            "WebSocket port-forward: closing on a malformed message: {e}"
                        );
                        break;
                    }
                }
            }
        }
    };

    let idle_expired = idle.expired();
    tokio::pin!(writer, reader, idle_expired);
    let mut reader_done = false;
    let mut writer_done = false;
    let result = loop {
        tokio::select! {
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                if reader_done {
                    break Ok(());
                }
            }
            _ = &mut reader, if !reader_done => {
                reader_done = true;
                // The client is gone: its backend connections go too.
                tasks.abort_all();
                if writer_done {
                    break Ok(());
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut idle_expired => {
                tracing::info!("WebSocket port-forward idle for {:?}: closing", limits.idle_timeout);
                break Err(PortForwardError::Idle(limits.idle_timeout));
            }
        }
        if writer_done && !reader_done {
            // Every backend connection ended and the close is sent: wait for the client's.
            let _ = tokio::time::timeout(limits.linger, &mut reader).await;
            break Ok(());
        }
    };
    tasks.abort_all();
    result
}
