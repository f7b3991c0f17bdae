//! `kubectl exec`, `cp` and `port-forward` on a running pod VM, through the whole
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
        copy_both_ways(c, bin, pod, container);
    }
    big_transfer_and_figures(c, pod, container);
}

/// `kubectl cp` into the pod and back out (tar over exec), byte for byte.
fn copy_both_ways(c: &Cluster, bin: &str, pod: &str, container: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let remote = format!("{pod}:/tmp/cp-{}", bin.replace('.', "-"));
    let out = kubectl_input(
        c,
        bin,
        &["cp", "-c", container, src.to_str().unwrap(), &remote],
        b"",
    );
    assert!(out.status.success(), "{bin} cp in: {}", text(&out.stderr));
    let back = dir.path().join("out.bin");
    let out = kubectl_input(
        c,
        bin,
        &["cp", "-c", container, &remote, back.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success(), "{bin} cp out: {}", text(&out.stderr));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "{bin} cp: the file came back changed"
    );
    eprintln!("[cluster] {bin} cp of 200 kB into {pod} and back: identical");
}

/// Waits until something answers HTTP on the forwarded local `port`.
fn wait_forward(c: &Cluster, port: u16) {
    let t = Instant::now();
    let url = format!("http://127.0.0.1:{port}/");
    loop {
        let probe = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.netns,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "30",
                &url,
            ])
            .output()
            .unwrap();
        if !text(&probe.stdout).starts_with("000") {
            return;
        }
        assert!(
            t.elapsed() < EXEC_WITHIN,
            "port-forward on {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// 1 MiB through `kubectl port-forward` (two connections at once, checked by digest), and
/// the figures: exec round trip and port-forward throughput beside the same straight to the
/// pod IP.
fn big_transfer_and_figures(c: &Cluster, pod: &str, container: &str) {
    let sh = "dd if=/dev/urandom of=/tmp/big bs=1024 count=1024 2>/dev/null; \
              (httpd -f -p 8090 -h /tmp &) ; sha256sum /tmp/big";
    let out = kubectl_input(
        c,
        "kubectl",
        &["exec", pod, "-c", container, "--", "sh", "-c", sh],
        b"",
    );
    assert!(
        out.status.success(),
        "making /tmp/big: {}",
        text(&out.stderr)
    );
    let digest = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        digest.len(),
        64,
        "sha256sum printed {:?}",
        text(&out.stdout)
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &c.netns])
        .arg(kubectl_path("kubectl"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["port-forward", pod, "28090:8090"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fetch = |url: &str| -> (String, f64) {
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &c.netns, "sh", "-c"])
            .arg(format!("curl -sf -m 600 {url} | sha256sum"))
            .output()
            .unwrap();
        (
            text(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            t.elapsed().as_secs_f64(),
        )
    };
    // Wait for the forward to listen, then four big requests at once.
    wait_forward(c, 28090);
    let t = Instant::now();
    let digests: Vec<(String, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| fetch("http://127.0.0.1:28090/big")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let parallel = t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    for (d, secs) in &digests {
        assert_eq!(
            d, &digest,
            "1 MiB through port-forward arrived intact (after {secs:.1} s)"
        );
    }
    let (single_d, single_pf) = {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &c.netns])
            .arg(kubectl_path("kubectl"))
            .arg("--kubeconfig")
            .arg(c.kubeconfig())
            .args(["port-forward", pod, "28091:8090"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_forward(c, 28091);
        let r = fetch("http://127.0.0.1:28091/big");
        let _ = child.kill();
        let _ = child.wait();
        r
    };
    assert_eq!(single_d, digest);
    let ip = c.pod_field(pod, ".status.podIP");
    let (direct_d, direct) = fetch(&format!("http://{ip}:8090/big"));
    assert_eq!(direct_d, digest);
    // Exec round trips: `kubectl exec -- true`, five times.
    let rtt: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let out = kubectl_input(
                c,
                "kubectl",
                &["exec", pod, "-c", container, "--", "true"],
                b"",
            );
            assert!(out.status.success());
            t.elapsed().as_secs_f64()
        })
        .collect();
    // 1 MiB: busybox httpd in the emulated guest serves ~0.2 MiB/s here (CI budget).
    let mib = 1.0;
    eprintln!(
        "[cluster] figures: kubectl exec -- true median {:.0} ms; 1 MiB via port-forward {:.2} MiB/s (one connection), {:.2} MiB/s for 2 at once; straight to the pod IP {:.2} MiB/s",
        median(rtt) * 1000.0,
        mib / single_pf,
        2.0 * mib / parallel,
        mib / direct
    );
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
