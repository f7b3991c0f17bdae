//! Shared parts of the ingress tests: backends that echo what they got, objects, kubectl, curl.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Requests with `?delay=` that reached a backend.
pub static SLOW_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Node IP written to the Ingress status (documentation range; no traffic goes there).
pub const NODE_IP: &str = "192.0.2.10";

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

async fn respond(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if header(&req, "upgrade") == "echo" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return Ok(resp);
    }
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("delay="))
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = delay {
        SLOW_STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let text = format!(
        "backend={name}\nmethod={}\npath={}\nhost={}\nxff={}\nxfh={}\nxfp={}\nxhop={}\n",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        header(&req, "host"),
        header(&req, "x-forwarded-for"),
        header(&req, "x-forwarded-host"),
        header(&req, "x-forwarded-proto"),
        header(&req, "x-hop"),
    );
    let len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{text}len={len}\n"
    )))))
}

/// An HTTP/1.1 server on 127.0.0.1 that answers with its name and what it received.
pub async fn backend(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), service_fn(move |r| respond(name, r)))
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A free loopback port nobody listens on (for 502s).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Service `name` (port 80 named `http`) in `default`, and one EndpointSlice per target port,
/// each with the endpoint 127.0.0.1.
pub async fn service(client: &kube::Client, name: &str, ports: &[u16]) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    for (i, p) in ports.iter().enumerate() {
        let sl: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-{i}"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": p, "protocol": "TCP"}]}))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &sl)
            .await
            .unwrap();
    }
}

/// `kubectl --kubeconfig K <args>` with `stdin`; panics with stderr on failure.
pub fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` of a YAML document.
pub fn apply(kubeconfig: &std::path::Path, yaml: &str) {
    kubectl(kubeconfig, &["apply", "-f", "-"], yaml);
}

/// What curl got.
#[derive(Debug)]
pub struct Curl {
    /// Exit code of curl.
    pub exit: i32,
    /// HTTP status (`000` if none).
    pub code: String,
    /// Response body.
    pub body: String,
    /// curl's stderr (with `-v`, the TLS details).
    pub stderr: String,
    /// `%{http_version}`.
    pub version: String,
}

impl Curl {
    /// The `key=value` line of an echoed body.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// Runs the real curl with `args` (quiet, 10 s limit).
pub fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (code, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        code: code.to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        version: version.to_string(),
    }
}

/// curl over plain HTTP to `addr` with `Host: host`.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Curl {
    let url = format!("http://{addr}{path}");
    curl(&["-H", &format!("Host: {host}"), &url])
}

/// Polls `f` (every 100 ms, up to 30 s) until it returns Some.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the backend answering `host` + `path` is `want`.
pub async fn routes_to(addr: SocketAddr, host: &str, path: &str, want: &str) -> Curl {
    let what = format!("{host}{path} → {want}");
    eventually(&what, || {
        let c = get(addr, host, path);
        (c.field("backend") == Some(want)).then_some(c)
    })
    .await
}

/// A raw HTTP/1.1 client connection (to prove keep-alive and upgrades byte for byte).
pub struct Raw(pub TcpStream);

impl Raw {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    /// Reads one response head (status line and headers).
    pub fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.0.read(&mut b).expect("read response head");
            assert!(
                n == 1,
                "connection closed after {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(b[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// Sends a GET and reads a Content-Length-framed response: (head, body).
    pub fn get(&mut self, host: &str, path: &str) -> (String, String) {
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let head = self.read_head();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        (head, String::from_utf8_lossy(&body).into_owned())
    }
}
