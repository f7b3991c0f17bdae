//! A small WebSocket client (RFC 6455, client side: masked frames) for the URLs kennel-cri's
//! CRI `Exec`/`Attach`/`PortForward` return, with the Kubernetes channel protocols on top:
//! `v5.channel.k8s.io` for exec/attach (channel byte first; 0 stdin, 1 stdout, 2 stderr,
//! 3 status, 4 resize, 255 close signal) and kubelet's `v4.channel.k8s.io` port-forward.
//! Written here rather than taken from a crate so the server is checked against an
//! independent reading of the protocol.
#![allow(dead_code)]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// A binary message.
    Binary(Vec<u8>),
    /// A text message.
    Text(String),
    /// A close frame, with its code.
    Close(Option<u16>),
}

/// An open WebSocket connection.
pub struct Ws {
    stream: TcpStream,
    /// The subprotocol the server chose.
    pub protocol: String,
}

/// An HTTP answer other than 101.
#[derive(Debug)]
pub struct Refused {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// The network namespace the streaming server listens in (kennel-cri binds it inside its
/// `--netns`, beside the node agent), set once by the test.
static NETNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Connect from inside network namespace `name` from now on.
pub fn use_netns(name: &str) {
    let _ = NETNS.set(name.to_string());
}

/// A TCP connection to `host` (`ip:port`), made inside the namespace set by [`use_netns`].
async fn dial(host: &str) -> TcpStream {
    let Some(ns) = NETNS.get().cloned() else {
        return TcpStream::connect(host)
            .await
            .expect("streaming server reachable");
    };
    let host = host.to_string();
    let std_stream = tokio::task::spawn_blocking(move || {
        netns::NetNs::named(&ns).run(|| std::net::TcpStream::connect(&host))
    })
    .await
    .expect("dial task")
    .expect("enter the namespace")
    .expect("streaming server reachable");
    std_stream.set_nonblocking(true).expect("nonblocking");
    TcpStream::from_std(std_stream).expect("tokio stream")
}

/// Splits `http://host:port/path?query` into (`host:port`, `/path?query`).
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Opens a WebSocket to `url` offering `protocol`.
pub async fn connect(url: &str, protocol: &str) -> Result<Ws, Refused> {
    let (host, path) = split_url(url);
    let mut stream = dial(host).await;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(
            n == 1 && head.len() < 64 * 1024,
            "truncated HTTP answer: {head:?}"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if status != 101 {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let _ = stream.read_exact(&mut body).await;
        return Err(Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    assert_eq!(
        header("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the RFC 6455 accept key of the sample nonce: {head}"
    );
    Ok(Ws {
        stream,
        protocol: header("sec-websocket-protocol").unwrap_or_default(),
    })
}

impl Ws {
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len < 65536 {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // A server that already closed may refuse the bytes: the read side reports it.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a binary message.
    pub async fn send(&mut self, data: &[u8]) {
        self.send_frame(0x2, data).await;
    }

    /// Sends `data` on a channel.
    pub async fn send_channel(&mut self, channel: u8, data: &[u8]) {
        let mut msg = vec![channel];
        msg.extend_from_slice(data);
        self.send(&msg).await;
    }

    /// Sends a close frame (1000).
    pub async fn close(&mut self) {
        self.send_frame(0x8, &1000u16.to_be_bytes()).await;
    }

    /// The next message; None when the connection ended without a close frame.
    pub async fn recv(&mut self) -> Option<Msg> {
        let mut data = Vec::new();
        let mut first_opcode = None;
        loop {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).await.ok()?;
            let fin = h[0] & 0x80 != 0;
            let opcode = h[0] & 0x0f;
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).await.ok()?;
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).await.ok()?;
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await.ok()?;
            match opcode {
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Some(Msg::Close(code));
                }
                0x9 => self.send_frame(0xa, &payload).await,
                0xa => {}
                _ => {
                    if opcode != 0 {
                        first_opcode = Some(opcode);
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return Some(match first_opcode {
                            Some(0x1) => Msg::Text(String::from_utf8_lossy(&data).into_owned()),
                            _ => Msg::Binary(data),
                        });
                    }
                }
            }
        }
    }
}

/// What an exec or attach session delivered.
#[derive(Debug, Default)]
pub struct Session {
    /// Channel 1.
    pub stdout: Vec<u8>,
    /// Channel 2.
    pub stderr: Vec<u8>,
    /// Channel 3 (the status JSON).
    pub status: String,
    /// The close code.
    pub close: Option<u16>,
}

impl Session {
    /// Stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// Stderr as text.
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Collects a v5 exec/attach session until the server closes it, or until `until` returns true
/// on what came so far; bounded by `timeout`.
pub async fn collect(ws: &mut Ws, timeout: Duration, until: impl Fn(&Session) -> bool) -> Session {
    let mut s = Session::default();
    let run = async {
        while let Some(msg) = ws.recv().await {
            match msg {
                Msg::Binary(m) if !m.is_empty() => match m[0] {
                    1 => s.stdout.extend_from_slice(&m[1..]),
                    2 => s.stderr.extend_from_slice(&m[1..]),
                    3 => s.status.push_str(&String::from_utf8_lossy(&m[1..])),
                    c => panic!("message on channel {c}: {m:?}"),
                },
                Msg::Binary(_) | Msg::Text(_) => {}
                Msg::Close(code) => {
                    s.close = code;
                    return;
                }
            }
            if until(&s) {
                return;
            }
        }
    };
    if tokio::time::timeout(timeout, run).await.is_err() {
        panic!("session not done within {timeout:?}; so far: {s:?}");
    }
    s
}
