//! CRI streaming checks of the end-to-end test, on pods it already runs: `Exec` (output and
//! exit status, stdin closed with v5's signal, a tty's size), token reuse and unknown tokens,
//! `PortForward` to kubia's 8080 with kubelet's WebSocket protocol, `Attach` to the ticker.

use crate::harness::Cri;
use crate::ws::{self, collect, Msg};
use k8s_cri::v1 as cri;
use std::time::{Duration, Instant};
use tonic::Code;

/// One streaming session may take this long (an exec is seconds of emulated guest work here).
const SESSION_TIMEOUT: Duration = Duration::from_secs(180);
const V5: &str = "v5.channel.k8s.io";

fn exec_req(id: &str, cmd: &[&str], streams: [bool; 4]) -> cri::ExecRequest {
    let [stdin, stdout, stderr, tty] = streams;
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        stdout,
        stderr,
        tty,
    }
}

async fn exec_url(cri: &mut Cri, req: cri::ExecRequest) -> String {
    let url = cri
        .rt
        .exec(req)
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}"))
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("/exec/"), "{url}");
    url
}

async fn open(cri: &Cri, url: &str, protocol: &str) -> ws::Ws {
    match ws::connect(url, protocol).await {
        Ok(ws) => ws,
        Err(r) => panic!("{url}: {} {}\n{}", r.status, r.body, cri.diagnostics()),
    }
}

fn assert_done(s: &ws::Session, what: &str) {
    assert_eq!(s.close, Some(1000), "{what}: a normal close: {s:?}");
}

/// Exec: refusals by the CRI call, then sessions over the URLs.
pub async fn exec_checks(cri: &mut Cri, running: &str, exited: &str) {
    ws::use_netns(&cri.netns);
    let e = cri
        .rt
        .exec(exec_req(
            &"f".repeat(64),
            &["true"],
            [false, true, false, false],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = cri
        .rt
        .exec(exec_req(running, &[], [false, true, false, false]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "cmd is required")
    );
    let e = cri
        .rt
        .exec(exec_req(running, &["true"], [false; 4]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = cri
        .rt
        .exec(exec_req(running, &["true"], [false, true, true, true]))
        .await
        .unwrap_err();
    assert!(e.message().contains("tty and stderr"), "{e}");
    let e = cri
        .rt
        .exec(exec_req(exited, &["true"], [false, true, false, false]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("not running"), "{e}");

    // (a) both output streams and the exit status.
    let t0 = Instant::now();
    let url = exec_url(
        cri,
        exec_req(
            running,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            [false, true, true, false],
        ),
    )
    .await;
    let mut w = open(cri, &url, V5).await;
    assert_eq!(w.protocol, V5);
    let s = collect(&mut w, SESSION_TIMEOUT, |_| false).await;
    eprintln!("streaming exec (out/err/exit 3) took {:?}", t0.elapsed());
    assert_eq!(
        (s.out().as_str(), s.err().as_str()),
        ("out\n", "err\n"),
        "{s:?}"
    );
    assert!(
        s.status.contains("\"reason\":\"NonZeroExitCode\"")
            && s.status.contains("command terminated with exit code 3")
            && s.status
                .contains("{\"reason\":\"ExitCode\",\"message\":\"3\"}"),
        "{}",
        s.status
    );
    assert_done(&s, "exec exit 3");

    // (e) the token is single use; an unknown one is refused too; a token at another path is
    // refused (and used up).
    let r = ws::connect(&url, V5)
        .await
        .err()
        .expect("a reused token is refused");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body.contains("unknown, expired or already used"),
        "{}",
        r.body
    );
    let base = &url[..url.find("/exec/").unwrap()];
    let r = ws::connect(&format!("{base}/exec/not-a-token"), V5)
        .await
        .err()
        .expect("an unknown token is refused");
    assert_eq!(r.status, 404, "{}", r.body);
    let url = exec_url(
        cri,
        exec_req(running, &["true"], [false, true, false, false]),
    )
    .await;
    let r = ws::connect(&url.replace("/exec/", "/attach/"), V5)
        .await
        .err()
        .expect("an exec token at /attach is refused");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = ws::connect(&url, V5).await.err().expect("and is used up");
    assert_eq!(r.status, 404, "{}", r.body);

    // (b) stdin: bytes echoed by cat, then v5's close signal ends stdin and cat.
    let t0 = Instant::now();
    let url = exec_url(cri, exec_req(running, &["cat"], [true, true, false, false])).await;
    let mut w = open(cri, &url, V5).await;
    let input = b"hello stdin \x00\x01\xfe\xff\n";
    w.send_channel(0, input).await;
    let s = collect(&mut w, SESSION_TIMEOUT, |s| s.stdout.len() >= input.len()).await;
    assert_eq!(s.stdout, input, "{s:?}");
    w.send(&[255, 0]).await;
    let s = collect(&mut w, SESSION_TIMEOUT, |_| false).await;
    eprintln!("streaming exec of cat with stdin took {:?}", t0.elapsed());
    assert!(s.stdout.is_empty(), "{s:?}");
    assert_eq!(
        s.status, "{\"metadata\":{},\"status\":\"Success\"}",
        "{s:?}"
    );
    assert_done(&s, "cat");

    // (c) a tty: the client's size (sent first, on channel 4) is the terminal's.
    for (cmd, strict) in [
        (&["stty", "size"][..], false),
        (&["sh", "-c", "sleep 1; stty size"][..], true),
    ] {
        let t0 = Instant::now();
        let url = exec_url(cri, exec_req(running, cmd, [false, true, false, true])).await;
        let mut w = open(cri, &url, V5).await;
        w.send_channel(4, br#"{"Width":100,"Height":40}"#).await;
        let s = collect(&mut w, SESSION_TIMEOUT, |_| false).await;
        let out = s.out();
        eprintln!(
            "streaming tty exec {cmd:?} took {:?}: {out:?}",
            t0.elapsed()
        );
        if strict {
            assert_eq!(out.trim_end(), "40 100", "{s:?}");
            assert!(out.ends_with("\r\n"), "a terminal's newline: {out:?}");
            assert!(s.status.contains("Success"), "{s:?}");
            assert_done(&s, "tty");
        }
    }
}

/// One GET through a CRI PortForward URL with kubelet's WebSocket port-forward (`?ports=`):
/// the data (until `want` shows up or the server closes) and the error channel's text.
async fn forward_get(
    cri: &mut Cri,
    pod: &str,
    port: u16,
    path: &str,
    want: &str,
) -> (String, String) {
    let url = cri
        .rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![i32::from(port)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    assert!(url.contains("/portforward/"), "{url}");
    let mut w = open(cri, &format!("{url}?ports={port}"), "v4.channel.k8s.io").await;
    assert_eq!(w.protocol, "v4.channel.k8s.io");
    let p = port.to_le_bytes();
    let mut prefixes = Vec::new();
    for _ in 0..2 {
        match w.recv().await {
            Some(Msg::Binary(m)) => prefixes.push(m),
            other => panic!("port prefix expected: {other:?}"),
        }
    }
    prefixes.sort();
    assert_eq!(prefixes, [vec![0, p[0], p[1]], vec![1, p[0], p[1]]]);
    let req = format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n");
    w.send_channel(0, req.as_bytes()).await;
    let (mut data, mut errors) = (Vec::new(), String::new());
    let run = async {
        while let Some(msg) = w.recv().await {
            match msg {
                Msg::Binary(m) if m.first() == Some(&0) => data.extend_from_slice(&m[1..]),
                Msg::Binary(m) if m.first() == Some(&1) => {
                    errors.push_str(&String::from_utf8_lossy(&m[1..]))
                }
                Msg::Close(_) => return,
                other => panic!("unexpected {other:?}"),
            }
            if String::from_utf8_lossy(&data).contains(want) {
                return;
            }
        }
    };
    tokio::time::timeout(SESSION_TIMEOUT, run)
        .await
        .expect("port-forward answered in time");
    w.close().await;
    (String::from_utf8_lossy(&data).into_owned(), errors)
}

/// PortForward in `pod`: kubia on 8080 (listening on every address), a port nothing listens
/// on, and a server listening only on the pod's 127.0.0.1 (busybox httpd started in `sleeper`
/// with ExecSync), reached through the agent's forwarder.
pub async fn port_forward_checks(cri: &mut Cri, pod: &str, sleeper: &str, ip: &str) {
    ws::use_netns(&cri.netns);
    let e = cri
        .rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "f".repeat(64),
            port: vec![8080],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = cri
        .rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![0],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    let t0 = Instant::now();
    let (body, errors) = forward_get(cri, pod, 8080, "/", "You've hit pod-a").await;
    eprintln!("port-forward to kubia:8080 took {:?}", t0.elapsed());
    assert!(
        body.contains("You've hit pod-a"),
        "{body}\nerrors: {errors}"
    );
    assert!(errors.is_empty(), "{errors}");

    let (body, errors) = forward_get(cri, pod, 8081, "/", "-").await;
    eprintln!("port-forward to 8081 (nothing there): {errors:?}");
    assert!(body.is_empty(), "{body}");
    assert!(errors.contains("error forwarding port 8081"), "{errors:?}");

    let r = cri
        .rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.into(),
            cmd: ["httpd", "-p", "127.0.0.1:7070", "-h", "/etc"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout: 60,
        })
        .await
        .expect("ExecSync httpd")
        .into_inner();
    assert_eq!(r.exit_code, 0, "{r:?}");
    let t0 = Instant::now();
    let (body, errors) = forward_get(cri, pod, 7070, "/hostname", "pod-a").await;
    eprintln!(
        "port-forward to httpd on the pod's 127.0.0.1:7070 took {:?}: {body:?}",
        t0.elapsed()
    );
    assert!(
        body.contains("200 OK") && body.contains("pod-a"),
        "{body}\nerrors: {errors}"
    );
    assert!(
        cri.http_get(&format!("http://{ip}:7070/hostname")).is_err(),
        "httpd listens on the pod's localhost only"
    );
}

/// Attach to `ticker` (prints a line every second; created without stdin).
pub async fn attach_checks(cri: &mut Cri, ticker: &str) {
    ws::use_netns(&cri.netns);
    let req = |stdin: bool| cri::AttachRequest {
        container_id: ticker.into(),
        stdin,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let e = cri.rt.attach(req(true)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("stdin is not enabled"), "{e}");
    let t0 = Instant::now();
    let url = cri
        .rt
        .attach(req(false))
        .await
        .expect("Attach")
        .into_inner()
        .url;
    assert!(url.contains("/attach/"), "{url}");
    let mut w = open(cri, &url, V5).await;
    let line_done = |s: &ws::Session| {
        let out = s.out();
        out.find("tick ").is_some_and(|i| out[i..].contains('\n'))
    };
    let s = collect(&mut w, SESSION_TIMEOUT, line_done).await;
    eprintln!("attach: first tick after {:?}: {:?}", t0.elapsed(), s.out());
    assert!(s.status.is_empty() && s.close.is_none(), "{s:?}");
    let out = s.out();
    let line = &out[out.find("tick ").unwrap()..];
    let n: u64 = line["tick ".len()..line.find('\n').unwrap()]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a tick line: {out:?}"));
    assert!(n > 0, "{out:?}");
    w.close().await;
    drop(w);
    // Detaching leaves the container running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = cri
        .rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ticker.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
}

/// Attach with stdin to a `cat` created with `stdin` and `stdin_once` in `pod`: what is sent
/// comes back through the container's output; the v5 close signal ends the attach's stdin,
/// which (stdin_once) closes the container's, so cat exits 0 and the session ends with it.
pub async fn attach_stdin_checks(
    cri: &mut Cri,
    pod: &str,
    cfg: &cri::PodSandboxConfig,
    image: &str,
) {
    ws::use_netns(&cri.netns);
    let mut c = crate::container_config("reader", image, &["cat"], 0);
    c.stdin = true;
    c.stdin_once = true;
    let id = crate::create_start(cri, pod, cfg, c).await;
    crate::wait_state(cri, &id, cri::ContainerState::ContainerRunning).await;
    let t0 = Instant::now();
    let url = cri
        .rt
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach with stdin")
        .into_inner()
        .url;
    let mut w = open(cri, &url, V5).await;
    let input = b"hello attach\n";
    w.send_channel(0, input).await;
    let s = collect(&mut w, SESSION_TIMEOUT, |s| s.stdout.len() >= input.len()).await;
    assert_eq!(s.stdout, input, "{s:?}");
    w.send(&[255, 0]).await;
    let s = collect(&mut w, SESSION_TIMEOUT, |_| false).await;
    eprintln!(
        "attach with stdin to cat (stdin_once) took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        s.status, "{\"metadata\":{},\"status\":\"Success\"}",
        "{s:?}"
    );
    assert_done(&s, "attach stdin_once");
    let st = crate::wait_state(cri, &id, cri::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let log =
        std::fs::read_to_string(cri.log_dir("pod-a").join("reader/0.log")).unwrap_or_default();
    assert!(
        log.contains("stdout F hello attach"),
        "the log file got it too: {log}"
    );
    crate::remove_and_check_gone(cri, &id, "reader").await;
}
