//! The test fixture: an HTTP server on loopback that answers like the API server as far as kubectl
//! and kube-rs need (discovery, one Running pod `p` with container `c`, and its `exec`, `attach`
//! and `portforward` subresources through kennel-stream), a host-process backend for exec/attach
//! (pipes, or a pty for tty sessions) and a loopback TCP server standing for the pod's port 8080.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kennel_stream::{
    negotiate_exec, negotiate_port_forward, serve_attach, serve_exec, serve_port_forward, ExecIo,
    ExecOptions, ExecSession, Limits, PortForwardOptions, TerminalSize,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The port "inside the pod" that the backend TCP server stands for.
pub const POD_PORT: u16 = 8080;

/// kubectl 1.32 (WebSocket first) and 1.27 (SPDY only).
pub fn kubectl_new() -> PathBuf {
    kubectl(
        "KENNEL_KUBECTL_NEW",
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
    )
}
pub fn kubectl_old() -> PathBuf {
    kubectl(
        "KENNEL_KUBECTL_OLD",
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    )
}
fn kubectl(var: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} is missing (set {var} to a kubectl of that version)",
        path.display()
    );
    path
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kennel_stream=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// What the fixture saw: negotiated protocols, resizes, terminations.
#[derive(Default)]
pub struct Events(Mutex<Vec<String>>);

impl Events {
    pub fn push(&self, e: impl Into<String>) {
        self.0.lock().unwrap().push(e.into());
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn any(&self, prefix: &str) -> bool {
        self.all().iter().any(|e| e.starts_with(prefix))
    }
}

pub struct FakeApi {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub backend_port: u16,
    pub events: Arc<Events>,
}

struct State {
    events: Arc<Events>,
    backend_port: u16,
    limits: Limits,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        init_tracing();
        let backend_port = start_backend().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events = Arc::new(Events::default());
        let state = Arc::new(State {
            events: events.clone(),
            backend_port,
            // kubectl sends its terminal size right after connecting; wait long on a busy machine.
            limits: Limits {
                initial_resize_wait: Duration::from_secs(30),
                ..Limits::default()
            },
        });
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, state.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\n\
                 contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\n\
                 current-context: t\nusers:\n- name: u\n  user:\n    token: test\n"
            ),
        )
        .unwrap();
        FakeApi {
            addr,
            dir,
            kubeconfig,
            backend_port,
            events,
        }
    }

    /// A kubectl command against this server (its own HOME, so its own discovery cache).
    pub fn kubectl(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
            .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
            .kill_on_drop(true);
        cmd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs a command to its end with no stdin, bounded so a hang fails the test instead of the run.
pub async fn run(mut cmd: Command) -> std::process::Output {
    cmd.stdin(Stdio::null());
    output(cmd, None).await
}

/// Runs a command with `input` on its stdin.
pub async fn run_with_input(cmd: Command, input: &[u8]) -> std::process::Output {
    output(cmd, Some(input.to_vec())).await
}

async fn output(mut cmd: Command, input: Option<Vec<u8>>) -> std::process::Output {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the command did not finish within 180 s")
        .expect("wait")
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

fn pod_json() -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "6a1c0d4e-0000-4000-8000-000000000001",
                     "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "stdin": true,
                                 "ports": [{"containerPort": POD_PORT, "name": "http"}]}],
                 "nodeName": "n"},
        "status": {"phase": "Running", "podIP": "10.0.0.2",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "busybox",
                                          "imageID": "", "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}
    })
    .to_string()
}

fn discovery(path: &str) -> Option<String> {
    let v = match path {
        "/api" => serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => {
            serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["get", "list"], "shortNames": ["po"]},
            {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
            {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}]})
        }
        "/version" => serde_json::json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0",
            "platform": "linux/amd64"}),
        _ => return None,
    };
    Some(v.to_string())
}

async fn handle(
    mut req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        if let Some(body) = discovery(&path) {
            return Ok(json(StatusCode::OK, body));
        }
        if path == "/api/v1/namespaces/default/pods/p" {
            return Ok(json(StatusCode::OK, pod_json()));
        }
    }
    let resp = match path.as_str() {
        "/api/v1/namespaces/default/pods/p/exec" => exec(&mut req, &state, false),
        "/api/v1/namespaces/default/pods/p/attach" => exec(&mut req, &state, true),
        "/api/v1/namespaces/default/pods/p/portforward" => port_forward(&mut req, &state),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": format!("{path} not found")})
            .to_string(),
        ),
    };
    Ok(resp)
}

fn exec(req: &mut Request<Incoming>, state: &Arc<State>, attach: bool) -> Response<Full<Bytes>> {
    let parsed = if attach {
        ExecOptions::attach_from_query(req.uri().query())
    } else {
        ExecOptions::exec_from_query(req.uri().query())
    };
    let opts = match parsed {
        Ok(o) => o,
        Err(e) => return kennel_stream::Refusal::from(e).response().map(Full::new),
    };
    let negotiated = match negotiate_exec(req) {
        Ok(n) => n,
        Err(refusal) => {
            state
                .events
                .push(format!("refused {}", refusal.status.as_u16()));
            return refusal.response().map(Full::new);
        }
    };
    let kind = if attach { "attach" } else { "exec" };
    state
        .events
        .push(format!("{kind} {}", negotiated.protocol().name()));
    let upgrade = hyper::upgrade::on(req);
    let state = state.clone();
    let response = negotiated.response();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                state.events.push(format!("upgrade failed: {e}"));
                return;
            }
        };
        let session = HostProcess::new(&opts, attach, state.events.clone());
        let result = if attach {
            serve_attach(io, &negotiated, &opts, session, &state.limits).await
        } else {
            serve_exec(io, &negotiated, &opts, session, &state.limits).await
        };
        state.events.push(format!("{kind} ended: {result:?}"));
    });
    response.map(Full::new)
}

fn port_forward(req: &mut Request<Incoming>, state: &Arc<State>) -> Response<Full<Bytes>> {
    let opts = match PortForwardOptions::from_query(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return kennel_stream::Refusal::from(e).response().map(Full::new),
    };
    let negotiated = match negotiate_port_forward(req, &opts) {
        Ok(n) => n,
        Err(refusal) => {
            state
                .events
                .push(format!("refused {}", refusal.status.as_u16()));
            return refusal.response().map(Full::new);
        }
    };
    state
        .events
        .push(format!("portforward {}", negotiated.protocol().name()));
    let upgrade = hyper::upgrade::on(req);
    let state = state.clone();
    let response = negotiated.response();
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let backend = state.backend_port;
        let events = state.events.clone();
        let dial = move |port: u16| {
            let events = events.clone();
            async move {
                events.push(format!("dial {port}"));
                if port != POD_PORT {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("nothing listens on port {port}"),
                    ));
                }
                TcpStream::connect(("127.0.0.1", backend)).await
            }
        };
        let result =
            serve_port_forward(TokioIo::new(io), &negotiated, &opts, dial, &state.limits).await;
        state.events.push(format!("portforward ended: {result:?}"));
    });
    response.map(Full::new)
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, nix::pty::Winsize);

/// Exec and attach as host processes: pipes, or a pty (with `setsid -c` making it the process'
/// controlling terminal) for tty sessions. Attach runs a small reader process, since no
/// container is running here.
pub struct HostProcess {
    opts: ExecOptions,
    attach: bool,
    child: Option<Child>,
    master: Option<OwnedFd>,
    events: Arc<Events>,
}

impl HostProcess {
    fn new(opts: &ExecOptions, attach: bool, events: Arc<Events>) -> Self {
        Self {
            opts: opts.clone(),
            attach,
            child: None,
            master: None,
            events,
        }
    }

    fn command(&self) -> Vec<String> {
        if self.attach {
            vec![
                "sh".into(),
                "-c".into(),
                "echo attached; while read l; do echo \"got $l\"; done".into(),
            ]
        } else {
            self.opts.command.clone()
        }
    }
}

fn winsize(size: TerminalSize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl ExecSession for HostProcess {
    async fn start(&mut self, size: Option<TerminalSize>) -> io::Result<ExecIo> {
        let argv = self.command();
        self.events.push(format!("start {argv:?} size {size:?}"));
        if self.opts.tty {
            let size = size.unwrap_or(TerminalSize {
                width: 80,
                height: 24,
            });
            let pty = nix::pty::openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
            let mut cmd = Command::new("setsid");
            cmd.arg("-w").arg("-c").args(&argv);
            cmd.stdin(Stdio::from(pty.slave.try_clone()?))
                .stdout(Stdio::from(pty.slave.try_clone()?))
                .stderr(Stdio::from(pty.slave))
                .kill_on_drop(true);
            let child = cmd.spawn()?;
            drop(cmd);
            let reader = tokio::fs::File::from_std(std::fs::File::from(pty.master.try_clone()?));
            let writer = tokio::fs::File::from_std(std::fs::File::from(pty.master.try_clone()?));
            self.master = Some(pty.master);
            self.child = Some(child);
            return Ok(ExecIo {
                stdin: self.opts.stdin.then(|| Box::pin(writer) as _),
                stdout: Some(Box::pin(reader)),
                stderr: None,
            });
        }
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(pipe(self.opts.stdin))
            .stdout(pipe(self.opts.stdout))
            .stderr(pipe(self.opts.stderr))
            .kill_on_drop(true)
            .spawn()?;
        let io = ExecIo {
            stdin: child.stdin.take().map(|s| Box::pin(s) as _),
            stdout: child.stdout.take().map(|s| Box::pin(s) as _),
            stderr: child.stderr.take().map(|s| Box::pin(s) as _),
        };
        self.child = Some(child);
        Ok(io)
    }

    async fn resize(&mut self, size: TerminalSize) {
        self.events
            .push(format!("resize {}x{}", size.width, size.height));
        if let Some(master) = &self.master {
            // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives for the call;
            // the fd is the pty master this session owns.
            let r = unsafe { set_winsize(master.as_raw_fd(), &winsize(size)) };
            if let Err(e) = r {
                self.events.push(format!("resize failed: {e}"));
            }
        }
    }

    async fn wait(&mut self) -> io::Result<i32> {
        let Some(child) = self.child.as_mut() else {
            return std::future::pending().await;
        };
        let status = child.wait().await?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        self.events.push(format!("exited {code}"));
        Ok(if self.attach { 0 } else { code })
    }

    async fn terminate(&mut self) {
        self.events.push("terminated");
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The deterministic bytes `GET /bytes/N` answers with.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The pod's port: a small HTTP/1.0-style server. `GET /hello`, `GET /bytes/N` (N pattern bytes),
/// `POST /sha256` (answers the body's SHA-256). One request per connection.
async fn start_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Err(e) = serve_backend(stream).await {
                    tracing::debug!("backend connection: {e}");
                }
            });
        }
    });
    port
}

async fn serve_backend(mut s: TcpStream) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let body = if method == "GET" && target == "/hello" {
        b"hello from the pod\n".to_vec()
    } else if let Some(n) = target.strip_prefix("/bytes/") {
        pattern(n.parse().unwrap_or(0))
    } else if method == "POST" && target == "/sha256" {
        let mut data = vec![0u8; length];
        s.read_exact(&mut data).await?;
        format!("{}\n", sha256_hex(&data)).into_bytes()
    } else {
        b"not found\n".to_vec()
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(header.as_bytes()).await?;
    s.write_all(&body).await?;
    s.shutdown().await
}
