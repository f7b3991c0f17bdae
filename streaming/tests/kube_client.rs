//! kube-rs (`ws` feature) as an independent client: `Api::<Pod>::exec` over `v5.channel.k8s.io`
//! (exit status, stdout/stderr, stdin with its close signal, a tty with a resize) and
//! `Api::<Pod>::portforward` over kubelet's WebSocket port-forward protocol.

mod common;

use common::{pattern, FakeApi, POD_PORT};
use futures_util::SinkExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pods(api: &FakeApi) -> Api<Pod> {
    let config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    Api::namespaced(client, "default")
}

async fn read_all(r: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s).await.unwrap();
    }
    s
}

#[tokio::test]
async fn kube_rs_exec_status_and_streams() {
    let api = FakeApi::start().await;
    let pods = pods(&api).await;
    let mut proc = pods
        .exec(
            "p",
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            &AttachParams::default(),
        )
        .await
        .unwrap();
    let status = proc.take_status().unwrap();
    let (stdout, stderr) = (proc.stdout(), proc.stderr());
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    let status = status.await.expect("a status");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(cause.reason.as_deref(), Some("ExitCode"));
    assert_eq!(cause.message.as_deref(), Some("3"));
    proc.join().await.unwrap();
    assert!(
        api.events.any("exec v5.channel.k8s.io"),
        "{:?}",
        api.events.all()
    );
}

#[tokio::test]
async fn kube_rs_exec_stdin_closes() {
    let api = FakeApi::start().await;
    let pods = pods(&api).await;
    let mut proc = pods
        .exec(
            "p",
            ["sha256sum"],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await
        .unwrap();
    let data = pattern(1024 * 1024);
    let mut stdin = proc.stdin().unwrap();
    let stdout = proc.stdout();
    let status = proc.take_status().unwrap();
    let writer = async {
        stdin.write_all(&data).await.unwrap();
        // Shutting stdin down sends v5's close signal: sha256sum sees EOF.
        stdin.shutdown().await.unwrap();
    };
    let both = async { tokio::join!(writer, read_all(stdout)) };
    let Ok(((), out)) = tokio::time::timeout(std::time::Duration::from_secs(60), both).await else {
        panic!("exec with stdin did not end: {:?}", api.events.all());
    };
    assert_eq!(out, format!("{}  -\n", common::sha256_hex(&data)));
    assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));
    proc.join().await.unwrap();
}

#[tokio::test]
async fn kube_rs_exec_tty_resize() {
    let api = FakeApi::start().await;
    let pods = pods(&api).await;
    let ready = api.path("ready");
    let inner = format!(
        "stty size; touch {}; trap 'stty size; exit 0' WINCH; while :; do sleep 0.2; done",
        ready.display()
    );
    let mut proc = pods
        .exec("p", ["sh", "-c", &inner], &AttachParams::interactive_tty())
        .await
        .unwrap();
    let mut sizes = proc.terminal_size().unwrap();
    sizes
        .send(TerminalSize {
            width: 90,
            height: 30,
        })
        .await
        .unwrap();
    let mut stdout = proc.stdout().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("30 90") {
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0, "output ended before the size: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    while !ready.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sizes
        .send(TerminalSize {
            width: 132,
            height: 43,
        })
        .await
        .unwrap();
    while !seen.contains("43 132") {
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0, "output ended before the new size: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status = proc.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    let events = api.events.all();
    assert!(events.iter().any(|e| e == "resize 132x43"), "{events:?}");
}

#[tokio::test]
async fn kube_rs_port_forward() {
    let api = FakeApi::start().await;
    let pods = pods(&api).await;
    for path in ["/hello", "/bytes/2000000"] {
        let mut pf = pods.portforward("p", &[POD_PORT]).await.unwrap();
        let mut stream = pf.take_stream(POD_PORT).unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: p\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).await.unwrap();
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &resp[split..];
        if path == "/hello" {
            assert_eq!(body, b"hello from the pod\n");
        } else {
            assert_eq!(body, pattern(2_000_000).as_slice());
        }
        drop(stream);
        // The server closed the WebSocket once the backend connection ended (as kubelet does);
        // kube-rs then fails to send its own close (SendAfterClosing), which is no failure here.
        let _ = pf.join().await;
    }
    assert!(
        api.events.any("portforward v4.channel.k8s.io"),
        "{:?}",
        api.events.all()
    );

    // A port nothing listens on: the error channel says why.
    let mut pf = pods.portforward("p", &[9999]).await.unwrap();
    let error = pf.take_error(9999).unwrap().await;
    assert_eq!(
        error.as_deref(),
        Some("error forwarding port 9999: nothing listens on port 9999")
    );
}
