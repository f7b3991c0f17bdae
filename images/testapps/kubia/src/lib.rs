//! Minimal std-only HTTP/1.1 server shared by `kubia` and `kubia-pet`, the example apps of
//! *Kubernetes in Action*. Each connection carries one request; the response closes it.
#![forbid(unsafe_code)]

pub mod client;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// Largest request body accepted (bytes).
pub const MAX_BODY: usize = 1 << 20;

/// A parsed HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/`.
    pub path: String,
    /// Request body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

/// A response: status code and body (sent as `text/plain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Response {
    /// `200 OK` with `body`.
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
        }
    }
}

/// The machine's host name (the pod name inside a pod).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Port to listen on: `$KUBIA_PORT` or 8080.
pub fn port() -> u16 {
    std::env::var("KUBIA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

/// Reads one request from `r`.
pub fn read_request(r: &mut impl BufRead) -> io::Result<Request> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad content-length")
                })?;
            }
        }
    }
    if len > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Request { method, path, body })
}

/// Writes `resp` to `w`.
pub fn write_response(w: &mut impl Write, resp: &Response) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        reason,
        resp.body.len(),
        resp.body
    )?;
    w.flush()
}

fn handle(
    stream: TcpStream,
    handler: &(dyn Fn(Request) -> Response + Send + Sync),
) -> io::Result<()> {
    let peer = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let resp = match read_request(&mut reader) {
        Ok(req) => {
            println!("Received request from {peer}: {} {}", req.method, req.path);
            handler(req)
        }
        Err(e) => Response {
            status: 400,
            body: format!("{e}\n"),
        },
    };
    write_response(&mut stream, &resp)
}

/// Serves `handler` on `0.0.0.0:port()` forever, one thread per connection.
pub fn serve(handler: impl Fn(Request) -> Response + Send + Sync + 'static) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port()))?;
    println!("Kubia server starting on {}...", listener.local_addr()?);
    let handler: Arc<dyn Fn(Request) -> Response + Send + Sync> = Arc::new(handler);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let h = handler.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &*h) {
                eprintln!("connection error: {e}");
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_post_with_body() {
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(
            req,
            Request {
                method: "POST".into(),
                path: "/x".into(),
                body: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_request(&mut &b"\r\n"[..]).is_err());
    }

    #[test]
    fn writes_response() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::ok("hi\n")).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.ends_with("\r\n\r\nhi\n"));
    }
}
