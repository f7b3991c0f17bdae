//! `kubectl exec`, `attach`-free streams and `port-forward` on a running pod VM, through the whole
//! chain: kubectl → API server (`pods/exec`, `pods/portforward`) → node agent (`/exec`,
//! `/portForward` on 10250) → kennel-cri's streaming server (CRI `Exec`/`PortForward` URLs) → the
//! guest agent. kubectl 1.32 speaks WebSocket (`v5.channel.k8s.io`, and port-forward's
//! SPDY-over-WebSocket tunnel), kubectl 1.27 SPDY/3.1: both run every check.

use super::harness::Cluster;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest time one exec may take in a busy emulated guest.
const EXEC_WITHIN: Duration = Duration::from_secs(120);

fn kubectl_path(bin: &str) -> std::path::PathBuf {
    let real = std::fs::canonicalize("/usr/bin/kubectl").unwrap_or_else(|_| "kubectl".into());
    real.parent()
        .map(|d| d.join(bin))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| bin.into())
}

/// `kubectl` (`bin`) in the node namespace with `input` on its stdin.
fn kubectl_input(c: &Cluster, bin: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &c.netns])
        .arg(kubectl_path(bin))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every exec and port-forward check, with kubectl 1.32 and 1.27.
pub fn check(c: &Cluster, pod: &str, container: &str, http_port: u16, needle: &str) {
    for (i, bin) in ["kubectl", "kubectl.1.27"].into_iter().enumerate() {
        let t = Instant::now();
        // stdout, stderr and the exit code come back apart.
        let out = kubectl_input(
            c,
            bin,
            &[
                "exec",
                pod,
                "-c",
                container,
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            b"",
        );
        assert_eq!(
            (text(&out.stdout).as_str(), out.status.code()),
            ("out\n", Some(3)),
            "{bin} exec: stderr {}\n{}",
            text(&out.stderr),
            c.diagnostics()
        );
        assert!(
            text(&out.stderr).contains("err"),
            "{bin}: {}",
            text(&out.stderr)
        );
        eprintln!(
            "[cluster] {bin} exec (stdout, stderr, exit 3) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // stdin flows in and its end reaches the process (cat exits).
        let input = format!("hello from {bin}\nsecond line\n");
        let out = kubectl_input(
            c,
            bin,
            &["exec", "-i", pod, "-c", container, "--", "cat"],
            input.as_bytes(),
        );
        assert!(out.status.success(), "{bin} exec -i: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), input, "{bin} exec -i cat");
        // A terminal: the client's size reaches the process before it runs (script gives
        // kubectl a terminal of 40 rows and 100 columns).
        let inner = format!(
            "stty rows 40 cols 100; {} --kubeconfig {} exec -it {pod} -c {container} -- stty size",
            kubectl_path(bin).display(),
            c.kubeconfig().display()
        );
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.netns,
                "script",
                "-qec",
                &inner,
                "/dev/null",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            text(&out.stdout).contains("40 100"),
            "{bin} exec -it stty size: {:?} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // A container the pod does not have: the API server's words.
        let out = kubectl_input(c, bin, &["exec", pod, "-c", "nope", "--", "true"], b"");
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("container nope is not valid for pod"),
            "{bin}: {}",
            text(&out.stderr)
        );
        port_forward(c, bin, pod, 28080 + i as u16, http_port, needle);
    }
}

/// `kubectl port-forward pod local:remote`, then HTTP through it from the node namespace.
fn port_forward(c: &Cluster, bin: &str, pod: &str, local: u16, remote: u16, needle: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &c.netns])
        .arg(kubectl_path(bin))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["port-forward", pod, &format!("{local}:{remote}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let url = format!("http://127.0.0.1:{local}/");
    let mut hits = 0;
    while hits < 2 {
        let out = Command::new("ip")
            .args(["netns", "exec", &c.netns, "curl", "-s", "-m", "30", &url])
            .output()
            .unwrap();
        let last = format!("{} {}", text(&out.stdout), text(&out.stderr));
        if text(&out.stdout).contains(needle) {
            // Two requests: each is its own forwarded connection.
            hits += 1;
            continue;
        }
        if t.elapsed() > EXEC_WITHIN {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{bin} port-forward {local}:{remote}: last {last:?}; kubectl said {} {}\n{}",
                text(&out.stdout),
                text(&out.stderr),
                c.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "[cluster] {bin} port-forward {local}:{remote}: two requests answered in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}
