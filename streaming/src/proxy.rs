//! An upgrade-aware proxy hop, as upstream's `UpgradeAwareHandler`: the API server forwards
//! `pods/exec|attach|portforward` to the node's API, and the node agent forwards its
//! `/exec|/attach|/portForward` to the runtime's streaming URL, both with [`forward_upgrade`].
//!
//! The client's request head goes to the backend with the headers the streaming protocols
//! negotiate on (`Connection`, `Upgrade`, `Sec-WebSocket-*`, `X-Stream-Protocol-Version`) and the
//! hop's own (e.g. the node's bearer token); the client's credentials do not. When the backend
//! answers 101 the two upgraded connections are spliced until either side ends; any other answer
//! (a refusal: 400, 403 with `X-Accepted-Stream-Protocol-Versions`, 404 ...) is passed back to
//! the client unchanged, so the client sees the backend's own words.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest refusal body read from a backend.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Request headers the streaming protocols negotiate on, passed to the backend.
const REQUEST_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "origin",
    "user-agent",
];

/// Why a hop failed before the backend answered.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The HTTP/1.1 handshake or the exchange with the backend failed.
    #[error("backend: {0}")]
    Backend(#[from] hyper::Error),
    /// The request could not be built (a header or path the backend cannot take).
    #[error("request to the backend: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Sends `req`'s head to the backend over `io` as `method path_and_query` with `host` and
/// `extra` headers added, and returns the backend's answer for the client. On 101 a task splices
/// the client's upgraded connection (from `req`) to the backend's until both directions end.
pub async fn forward_upgrade<B, IO>(
    mut req: Request<B>,
    io: IO,
    host: &str,
    path_and_query: &str,
    extra: HeaderMap,
) -> Result<Response<Bytes>, ProxyError>
where
    B: Send + 'static,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path_and_query)
        .body(http_body_util::Empty::<Bytes>::new())?;
    let headers = out.headers_mut();
    for name in REQUEST_HEADERS {
        for v in req.headers().get_all(*name) {
            headers.append(HeaderName::from_static(name), v.clone());
        }
    }
    headers.insert(
        header::HOST,
        HeaderValue::from_str(host).map_err(hyper::http::Error::from)?,
    );
    for (name, v) in extra.iter() {
        headers.insert(name.clone(), v.clone());
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming backend connection ended");
        }
    });
    let mut resp = sender.send_request(out).await?;
    let status = resp.status();
    let mut answer = Response::builder().status(status);
    for (name, v) in resp.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            answer = answer.header(name, v);
        }
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = read_bounded(resp.into_body()).await;
        return Ok(answer.body(body)?);
    }
    let backend = hyper::upgrade::on(&mut resp);
    let client = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!(error = %e, "streaming splice ended");
        }
    });
    Ok(answer.body(Bytes::new())?)
}

/// Reads at most [`MAX_REFUSAL_BODY`] bytes of a backend's refusal.
async fn read_bounded(mut body: hyper::body::Incoming) -> Bytes {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let room = MAX_REFUSAL_BODY.saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
            if room == 0 {
                break;
            }
        }
    }
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers one request with `answer` and, after a 101, echoes bytes.
    async fn backend(
        answer: &'static str,
    ) -> (tokio::net::TcpStream, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            if answer.starts_with("HTTP/1.1 101") {
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            }
            String::from_utf8(head).unwrap()
        });
        (tokio::net::TcpStream::connect(addr).await.unwrap(), task)
    }

    fn client_request() -> Request<()> {
        Request::builder()
            .method("POST")
            .uri("/api/v1/namespaces/default/pods/p/exec?command=ls")
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", "v4.channel.k8s.io")
            .header("x-stream-protocol-version", "v3.channel.k8s.io")
            .header("authorization", "Bearer client-secret")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn passes_a_refusal_back_and_drops_client_credentials() {
        let (io, task) = backend(
            "HTTP/1.1 403 Forbidden\r\nX-Accepted-Stream-Protocol-Versions: v5.channel.k8s.io\r\ncontent-length: 6\r\n\r\nno way",
        )
        .await;
        let mut extra = HeaderMap::new();
        extra.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer node"),
        );
        let resp = forward_upgrade(
            client_request(),
            io,
            "node:10250",
            "/exec/ns/p/c?command=ls",
            extra,
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()["x-accepted-stream-protocol-versions"],
            "v5.channel.k8s.io"
        );
        assert_eq!(resp.body().as_ref(), b"no way");
        let head = task.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("post /exec/ns/p/c?command=ls http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("host: node:10250\r\n"), "{head}");
        assert!(head.contains("authorization: bearer node\r\n"), "{head}");
        assert!(!head.contains("client-secret"), "{head}");
        assert!(
            head.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"),
            "{head}"
        );
        assert!(
            head.contains("x-stream-protocol-version: v3.channel.k8s.io\r\n"),
            "{head}"
        );
        assert!(head.contains("upgrade: spdy/3.1\r\n"), "{head}");
    }

    #[tokio::test]
    async fn splices_an_upgraded_connection() {
        // A real hyper server in front, so the client side's upgrade is hyper's own.
        let (backend_io, backend_task) = backend(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await;
        let backend_io = std::sync::Arc::new(tokio::sync::Mutex::new(Some(backend_io)));
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = front.accept().await.unwrap();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let backend_io = backend_io.clone();
                async move {
                    let io = backend_io.lock().await.take().unwrap();
                    let resp = forward_upgrade(req, io, "b", "/x", HeaderMap::new())
                        .await
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp.map(http_body_util::Full::new))
                }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .with_upgrades()
                .await
                .unwrap();
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /x HTTP/1.1\r\nHost: f\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
            "{head}"
        );
        c.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        c.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
        backend_task.await.unwrap();
    }
}
