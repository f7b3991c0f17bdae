//! The real kubectl against kennel-stream: 1.32 negotiates WebSocket (`v5.channel.k8s.io` for
//! exec, `SPDY/3.1+portforward.k8s.io` for port-forward), 1.27 speaks SPDY/3.1
//! (`v4.channel.k8s.io`, `portforward.k8s.io`); 1.32 with its WebSocket switches off speaks SPDY
//! too. Exec exit codes and streams, stdin, tty with resize, attach, port-forward with parallel
//! connections and 16 MiB each way checked by SHA-256, and refusals.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{kubectl_new, kubectl_old, pattern, run, run_with_input, sha256_hex, FakeApi};
use tokio::io::{AsyncBufReadExt, BufReader};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

async fn exec_exit_code(bin: PathBuf, env: &[(&str, &str)], protocol: &str) {
    let api = FakeApi::start().await;
    let mut cmd = api.kubectl(&bin);
    cmd.args([
        "exec",
        "p",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    cmd.envs(env.iter().copied());
    let out = run(cmd).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\ncommand terminated with exit code 3\n");
    assert!(
        api.events.any(&format!("exec {protocol}")),
        "{:?}",
        api.events.all()
    );

    // Success is exit 0 with nothing on stderr.
    let mut cmd = api.kubectl(&bin);
    cmd.args(["exec", "p", "--", "echo", "fine"]);
    cmd.envs(env.iter().copied());
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "fine\n");
    assert_eq!(text(&out.stderr), "");
}

#[tokio::test]
async fn exec_exit_code_kubectl_132_websocket() {
    exec_exit_code(kubectl_new(), &[], "v5.channel.k8s.io").await;
}

#[tokio::test]
async fn exec_exit_code_kubectl_127_spdy() {
    exec_exit_code(kubectl_old(), &[], "v4.channel.k8s.io").await;
}

#[tokio::test]
async fn exec_exit_code_kubectl_132_spdy() {
    exec_exit_code(
        kubectl_new(),
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
        "v4.channel.k8s.io",
    )
    .await;
}

async fn exec_stdin(bin: PathBuf) {
    let api = FakeApi::start().await;
    let mut cmd = api.kubectl(&bin);
    cmd.args(["exec", "-i", "p", "--", "cat"]);
    let out = run_with_input(cmd, b"hi\n").await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n");

    // A larger stdin, counted by the process.
    let input = pattern(3 * 1024 * 1024);
    let mut cmd = api.kubectl(&bin);
    cmd.args(["exec", "-i", "p", "--", "sha256sum"]);
    let out = run_with_input(cmd, &input).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), format!("{}  -\n", sha256_hex(&input)));
}

#[tokio::test]
async fn exec_stdin_kubectl_132() {
    exec_stdin(kubectl_new()).await;
}

#[tokio::test]
async fn exec_stdin_kubectl_127() {
    exec_stdin(kubectl_old()).await;
}

/// kubectl killed mid-exec: the session is told and the process killed. And a process that
/// exits while kubectl's stdin is still open ends the exec all the same.
async fn exec_ends(bin: PathBuf) {
    let api = FakeApi::start().await;
    let mut cmd = api.kubectl(&bin);
    cmd.args([
        "exec",
        "p",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 600",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("no output from the exec")
        .unwrap();
    assert_eq!(first.as_deref(), Some("started"));
    child.kill().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while !api.events.any("exec ended") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the session did not end: {:?}",
        api.events.all()
    );
    let events = api.events.all();
    assert!(events.contains(&"terminated".to_string()), "{events:?}");
    assert!(
        events.iter().any(|e| e == "exec ended: Err(ClientGone)"),
        "{events:?}"
    );

    let mut cmd = api.kubectl(&bin);
    cmd.args(["exec", "-i", "p", "--", "sh", "-c", "exit 5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let _stdin = child.stdin.take();
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("kubectl exec -i did not end with the process")
        .unwrap();
    assert_eq!(status.code(), Some(5));
}

#[tokio::test]
async fn exec_ends_kubectl_132() {
    exec_ends(kubectl_new()).await;
}

#[tokio::test]
async fn exec_ends_kubectl_127() {
    exec_ends(kubectl_old()).await;
}

/// kubectl under `script`, which gives it a terminal: the process sees the terminal's size at
/// start, then the new size after the terminal is resized while it runs.
async fn exec_tty(bin: PathBuf) {
    let api = FakeApi::start().await;
    let ready = api.path("ready");
    let inner = format!(
        "stty size; touch {ready}; trap 'stty size; exit 0' WINCH; while :; do sleep 0.2; done",
        ready = ready.display()
    );
    let script = format!(
        "stty rows 40 cols 100; \
         (while [ ! -e {ready} ]; do sleep 0.1; done; stty rows 50 cols 120 </dev/tty) & \
         {kubectl} exec -it p -- sh -c \"{inner}\"; code=$?; wait; exit $code",
        ready = ready.display(),
        kubectl = bin.display(),
    );
    let mut cmd = api.kubectl(Path::new("script"));
    cmd.args(["-qec", &script, "/dev/null"]);
    // script forwards its stdin to the terminal: keep it open and silent.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let out = match tokio::time::timeout(Duration::from_secs(40), child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("kubectl exec -it did not finish: {:?}", api.events.all()),
    };
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?} {:?}", api.events.all());
    assert!(stdout.contains("40 100"), "initial size: {stdout:?}");
    assert!(
        stdout.contains("50 120"),
        "size after the resize: {stdout:?}"
    );
    let events = api.events.all();
    assert!(
        events
            .iter()
            .any(|e| e.contains("size Some(TerminalSize { width: 100, height: 40 })")),
        "the process starts at the client's size: {events:?}"
    );
    assert!(events.iter().any(|e| e == "resize 120x50"), "{events:?}");
}

#[tokio::test]
async fn exec_tty_kubectl_132() {
    exec_tty(kubectl_new()).await;
}

#[tokio::test]
async fn exec_tty_kubectl_127() {
    exec_tty(kubectl_old()).await;
}

async fn attach(bin: PathBuf) {
    let api = FakeApi::start().await;
    let mut cmd = api.kubectl(&bin);
    cmd.args(["attach", "-i", "p", "-c", "c"]);
    let out = run_with_input(cmd, b"one\ntwo\n").await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?} {:?}", api.events.all());
    assert!(stdout.contains("attached\n"), "{stdout:?}");
    assert!(stdout.contains("got one\ngot two\n"), "{stdout:?}");
    assert!(api.events.any("attach "), "{:?}", api.events.all());
}

#[tokio::test]
async fn attach_kubectl_132() {
    attach(kubectl_new()).await;
}

#[tokio::test]
async fn attach_kubectl_127() {
    attach(kubectl_old()).await;
}

/// Starts `kubectl port-forward pod/p :REMOTE` and returns it with the local port it chose.
async fn start_port_forward(
    api: &FakeApi,
    bin: &Path,
    remote: u16,
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16) {
    let mut cmd = api.kubectl(bin);
    cmd.args(["port-forward", "pod/p", &format!(":{remote}")])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // "Forwarding from 127.0.0.1:PORT -> REMOTE"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        }
        panic!("kubectl port-forward ended without forwarding");
    })
    .await
    .expect("kubectl port-forward did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

async fn curl(args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "120"]).args(args);
    run(cmd).await
}

async fn port_forward(bin: PathBuf, env: &[(&str, &str)], protocol: &str) {
    let api = FakeApi::start().await;
    let (mut child, port) = start_port_forward(&api, &bin, common::POD_PORT, env).await;
    let base = format!("http://127.0.0.1:{port}");

    let out = curl(&[&format!("{base}/hello")]).await;
    assert_eq!(text(&out.stdout), "hello from the pod\n", "{out:?}");

    // Several connections at once.
    let mut parallel = Vec::new();
    for i in 0..8usize {
        let url = format!("{base}/bytes/{}", 100_000 + i);
        parallel.push(tokio::spawn(async move { curl(&[&url]).await }));
    }
    for (i, task) in parallel.into_iter().enumerate() {
        let out = task.await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, pattern(100_000 + i), "connection {i}");
    }

    // 16 MiB down, checked by digest.
    let size = 16 * 1024 * 1024;
    let file = api.path("down");
    let out = curl(&[
        "-o",
        file.to_str().unwrap(),
        &format!("{base}/bytes/{size}"),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let got = std::fs::read(&file).unwrap();
    assert_eq!(got.len(), size);
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(size)));

    // 16 MiB up: the backend answers the digest of what it received.
    let up = api.path("up");
    let data = pattern(size + 7);
    std::fs::write(&up, &data).unwrap();
    let out = curl(&[
        "--data-binary",
        &format!("@{}", up.display()),
        "-H",
        "Content-Type: application/octet-stream",
        &format!("{base}/sha256"),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), format!("{}\n", sha256_hex(&data)));

    let _ = child.kill().await;
    let mut err = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
    assert_eq!(err, "", "kubectl port-forward complained");
    assert!(
        api.events.any(&format!("portforward {protocol}")),
        "{:?}",
        api.events.all()
    );
    assert!(api.events.any("dial 8080"), "{:?}", api.events.all());
}

#[tokio::test]
async fn port_forward_kubectl_132_websocket_tunnel() {
    port_forward(kubectl_new(), &[], "SPDY/3.1+portforward.k8s.io").await;
}

#[tokio::test]
async fn port_forward_kubectl_127_spdy() {
    port_forward(kubectl_old(), &[], "portforward.k8s.io").await;
}

#[tokio::test]
async fn port_forward_kubectl_132_spdy() {
    port_forward(
        kubectl_new(),
        &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")],
        "portforward.k8s.io",
    )
    .await;
}

/// A port nothing listens on: the connection closes and kubectl reports the error it was sent.
async fn port_forward_refused(bin: PathBuf) {
    let api = FakeApi::start().await;
    let (mut child, port) = start_port_forward(&api, &bin, 9999, &[]).await;
    let mut stderr = child.stderr.take().unwrap();
    let out = curl(&[&format!("http://127.0.0.1:{port}/hello")]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(api.events.any("dial 9999"), "{:?}", api.events.all());
    let _ = child.kill().await;
    let mut err = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err),
    )
    .await;
    assert!(
        err.contains("error forwarding port 9999: nothing listens on port 9999"),
        "kubectl's stderr: {err:?}"
    );
}

#[tokio::test]
async fn port_forward_refused_kubectl_132() {
    port_forward_refused(kubectl_new()).await;
}

#[tokio::test]
async fn port_forward_refused_kubectl_127() {
    port_forward_refused(kubectl_old()).await;
}

/// Requests that are no acceptable upgrade get the upstream status and message.
#[tokio::test]
async fn refusals() {
    let api = FakeApi::start().await;
    let url = format!(
        "http://{}/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true",
        api.addr
    );
    // No upgrade at all.
    let out = curl(&["-i", "-X", "POST", &url]).await;
    let resp = text(&out.stdout);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("missing upgrade headers"), "{resp}");
    // SPDY with a protocol the server does not speak.
    let out = curl(&[
        "-i",
        "-X",
        "POST",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: SPDY/3.1",
        "-H",
        "X-Stream-Protocol-Version: v9.channel.k8s.io",
        &url,
    ])
    .await;
    let resp = text(&out.stdout);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{resp}"
    );
    assert!(resp.contains("unable to negotiate protocol"), "{resp}");
    // WebSocket with an unknown subprotocol.
    let out = curl(&[
        "-i",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        "Sec-WebSocket-Protocol: v9.channel.k8s.io",
        &url,
    ])
    .await;
    let resp = text(&out.stdout);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    // No command.
    let url = format!(
        "http://{}/api/v1/namespaces/default/pods/p/exec?stdout=true",
        api.addr
    );
    let out = curl(&["-i", "-X", "POST", &url]).await;
    let resp = text(&out.stdout);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("at least one command"), "{resp}");
}
