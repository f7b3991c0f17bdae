//! kennel-stream's wire behaviour against in-process clients (tungstenite, and the crate's own
//! SPDY frame codec) on in-memory connections: the port prefix of the WebSocket port-forward,
//! the base64 channel protocol, and the ends of a session — client gone, idle timeout, streams
//! that never open — each telling the session so.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hyper::Request;
use kennel_stream::spdy::frame::{Frame, FrameDecoder, FrameEncoder};
use kennel_stream::spdy::header::Headers;
use kennel_stream::{
    negotiate_exec, negotiate_port_forward, serve_exec, serve_port_forward, ExecError, ExecIo,
    ExecOptions, ExecSession, Limits, PortForwardOptions, TerminalSize,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

fn ws_request(path: &str, protocol: &str) -> Request<()> {
    Request::get(path)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", protocol)
        .body(())
        .unwrap()
}

async fn ws_client(io: DuplexStream) -> WebSocketStream<DuplexStream> {
    WebSocketStream::from_raw_socket(io, Role::Client, None).await
}

async fn next_binary(ws: &mut WebSocketStream<DuplexStream>) -> Vec<u8> {
    loop {
        match ws.next().await.expect("message").expect("ok") {
            Message::Binary(b) => return b.to_vec(),
            Message::Close(_) => panic!("closed"),
            _ => {}
        }
    }
}

/// Kubelet's WebSocket port-forward: the first message on every channel is its port, little
/// endian; data then flows on the even channel, and a refused port's error on the odd one.
#[tokio::test]
async fn websocket_port_forward_port_prefix() {
    let opts = PortForwardOptions::from_query(Some("ports=8080,9999")).unwrap();
    let negotiated =
        negotiate_port_forward(&ws_request("/pf", "v4.channel.k8s.io"), &opts).unwrap();
    let (server, client) = tokio::io::duplex(1 << 16);
    let dial = |port: u16| async move {
        if port != 8080 {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        }
        let (a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = b.read(&mut buf).await.unwrap();
            b.write_all(&buf[..n]).await.unwrap();
            b.write_all(b" echoed").await.unwrap();
        });
        Ok(a)
    };
    let task = tokio::spawn(async move {
        serve_port_forward(server, &negotiated, &opts, dial, &Limits::default()).await
    });
    let mut ws = ws_client(client).await;
    let mut prefixes = Vec::new();
    for _ in 0..4 {
        prefixes.push(next_binary(&mut ws).await);
    }
    assert_eq!(
        prefixes,
        [
            vec![0, 0x90, 0x1f],
            vec![1, 0x90, 0x1f],
            vec![2, 0x0f, 0x27],
            vec![3, 0x0f, 0x27]
        ]
    );
    ws.send(Message::Binary(Bytes::from_static(b"\x00ping")))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut error = Vec::new();
    while !got.ends_with(b"ping echoed") || error.is_empty() {
        let m = next_binary(&mut ws).await;
        match m[0] {
            0 => got.extend_from_slice(&m[1..]),
            3 => error.extend_from_slice(&m[1..]),
            other => panic!("channel {other}: {m:?}"),
        }
    }
    assert_eq!(
        String::from_utf8(error).unwrap(),
        "error forwarding port 9999: refused"
    );
    // Every backend connection ended: the server closes.
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
    drop(ws);
    task.await.unwrap().unwrap();
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, e: &str) {
        self.0.lock().unwrap().push(e.to_string());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A session that prints `output` and then runs until told otherwise (or exits with `code`
/// once its stdin ends, when it has one).
struct Fake {
    log: Log,
    output: &'static [u8],
    code: Option<i32>,
    keep: Option<DuplexStream>,
    stdin_done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Fake {
    fn new(log: &Log, output: &'static [u8], code: Option<i32>) -> Self {
        Fake {
            log: log.clone(),
            output,
            code,
            keep: None,
            stdin_done: None,
        }
    }
}

impl ExecSession for Fake {
    async fn start(&mut self, size: Option<TerminalSize>) -> io::Result<ExecIo> {
        self.log.push(&format!("start {size:?}"));
        let (out_r, mut out_w) = tokio::io::duplex(1024);
        out_w.write_all(self.output).await?;
        if self.code.is_some() {
            drop(out_w);
        } else {
            self.keep = Some(out_w);
        }
        let (in_w, mut in_r) = tokio::io::duplex(1024);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut s = String::new();
            let _ = in_r.read_to_string(&mut s).await;
            log.push(&format!("stdin {s:?}"));
            let _ = tx.send(());
        });
        self.stdin_done = Some(rx);
        Ok(ExecIo {
            stdin: Some(Box::pin(in_w)),
            stdout: Some(Box::pin(out_r)),
            stderr: None,
        })
    }
    async fn resize(&mut self, size: TerminalSize) {
        self.log
            .push(&format!("resize {}x{}", size.width, size.height));
    }
    async fn wait(&mut self) -> io::Result<i32> {
        match (self.code, self.stdin_done.as_mut()) {
            (Some(code), Some(done)) => {
                let _ = done.await;
                Ok(code)
            }
            _ => std::future::pending().await,
        }
    }
    async fn terminate(&mut self) {
        self.log.push("terminate");
    }
}

/// `v4.base64.channel.k8s.io`: text messages, the channel as a digit, the data in base64.
#[tokio::test]
async fn websocket_base64_exec() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let opts = ExecOptions::exec_from_query(Some("command=x&stdout=1")).unwrap();
    let negotiated = negotiate_exec(&ws_request("/exec", "v4.base64.channel.k8s.io")).unwrap();
    let (server, client) = tokio::io::duplex(1 << 16);
    let log = Log::default();
    let session = Fake::new(&log, b"hello", Some(0));
    let task = tokio::spawn(async move {
        serve_exec(server, &negotiated, &opts, session, &Limits::default()).await
    });
    let mut ws = ws_client(client).await;
    let mut texts = Vec::new();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_string()),
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!(texts[0], "1", "the empty opening message");
    assert_eq!(texts[1], format!("1{}", b64.encode("hello")));
    assert_eq!(
        texts[2],
        format!("3{}", b64.encode(r#"{"metadata":{},"status":"Success"}"#))
    );
    assert_eq!(texts.len(), 3, "{texts:?}");
    drop(ws);
    assert_eq!(
        task.await.unwrap().unwrap(),
        kennel_stream::ExitStatus::Code(0)
    );
}

/// v5: the client's close signal ends stdin; the status follows and the server closes.
#[tokio::test]
async fn websocket_v5_stdin_close_then_status() {
    let opts = ExecOptions::exec_from_query(Some("command=x&stdin=true&stdout=true")).unwrap();
    let negotiated = negotiate_exec(&ws_request("/exec", "v5.channel.k8s.io")).unwrap();
    let (server, client) = tokio::io::duplex(1 << 16);
    let log = Log::default();
    let session = Fake::new(&log, b"out", Some(3));
    let task = tokio::spawn(async move {
        serve_exec(server, &negotiated, &opts, session, &Limits::default()).await
    });
    let mut ws = ws_client(client).await;
    ws.send(Message::Binary(Bytes::from_static(b"\x00abc")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let mut stdout = Vec::new();
    let mut status = Vec::new();
    let mut first = None;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                first.get_or_insert(b.to_vec());
                match b[0] {
                    1 => stdout.extend_from_slice(&b[1..]),
                    3 => status.extend_from_slice(&b[1..]),
                    other => panic!("channel {other}"),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(u16::from(frame.unwrap().code), 1000);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        first.unwrap(),
        [1],
        "an empty stdout message opens the session"
    );
    assert_eq!(stdout, b"out");
    drop(ws);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    let result = task.await.unwrap();
    assert_eq!(result.unwrap(), kennel_stream::ExitStatus::Code(3));
    assert_eq!(log.all()[1], "stdin \"abc\"", "{:?}", log.all());
    assert!(!log.all().contains(&"terminate".to_string()));
}

#[tokio::test]
async fn client_gone_terminates_the_session() {
    let opts = ExecOptions::exec_from_query(Some("command=x&stdout=1")).unwrap();
    let negotiated = negotiate_exec(&ws_request("/exec", "v5.channel.k8s.io")).unwrap();
    let (server, client) = tokio::io::duplex(1 << 16);
    let log = Log::default();
    let session = Fake::new(&log, b"running", None);
    let task = tokio::spawn(async move {
        serve_exec(server, &negotiated, &opts, session, &Limits::default()).await
    });
    let mut ws = ws_client(client).await;
    while next_binary(&mut ws).await != b"\x01running" {}
    drop(ws);
    let result = task.await.unwrap();
    assert!(matches!(result, Err(ExecError::ClientGone)), "{result:?}");
    assert_eq!(log.all().last().unwrap(), "terminate");
}

#[tokio::test]
async fn idle_connection_terminates_the_session() {
    let opts = ExecOptions::exec_from_query(Some("command=x&stdout=1")).unwrap();
    let negotiated = negotiate_exec(&ws_request("/exec", "v5.channel.k8s.io")).unwrap();
    let (server, client) = tokio::io::duplex(1 << 16);
    let log = Log::default();
    let session = Fake::new(&log, b"", None);
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        linger: Duration::from_millis(100),
        ..Limits::default()
    };
    let _ws = ws_client(client).await;
    let result = serve_exec(server, &negotiated, &opts, session, &limits).await;
    assert!(matches!(result, Err(ExecError::Idle(_))), "{result:?}");
    assert_eq!(log.all().last().unwrap(), "terminate");
}

/// A SPDY client that opens only some of the streams its options call for.
#[tokio::test]
async fn spdy_missing_streams_time_out() {
    let opts = ExecOptions::exec_from_query(Some("command=x&stdout=1&stderr=1")).unwrap();
    let req = Request::post("/exec")
        .header("Connection", "Upgrade")
        .header("Upgrade", "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
        .body(())
        .unwrap();
    let negotiated = negotiate_exec(&req).unwrap();
    let (server, mut client) = tokio::io::duplex(1 << 16);
    let limits = Limits {
        stream_creation_timeout: Duration::from_millis(300),
        linger: Duration::from_millis(100),
        ..Limits::default()
    };
    let log = Log::default();
    let session = Fake::new(&log, b"", Some(0));
    let task =
        tokio::spawn(async move { serve_exec(server, &negotiated, &opts, session, &limits).await });
    let mut headers = Headers::default();
    headers.push("streamType", "error");
    let mut out = BytesMut::new();
    FrameEncoder::new()
        .encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers,
            },
            &mut out,
        )
        .unwrap();
    client.write_all(&out).await.unwrap();
    let result = task.await.unwrap();
    match result {
        Err(ExecError::StreamsTimeout { missing, .. }) => assert_eq!(missing, "stdout, stderr"),
        other => panic!("{other:?}"),
    }
    assert!(
        log.all().is_empty(),
        "the session never started: {:?}",
        log.all()
    );
    // The client got its SYN_REPLY and then the GOAWAY.
    let mut dec = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    client.read_buf(&mut buf).await.unwrap();
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut buf) {
        frames.push(f);
    }
    assert!(
        matches!(frames[0], Frame::SynReply { stream_id: 1, .. }),
        "{frames:?}"
    );
    assert!(
        frames.iter().any(|f| matches!(f, Frame::GoAway { .. })),
        "{frames:?}"
    );
}
