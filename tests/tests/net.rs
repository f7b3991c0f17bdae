//! virtio-net end to end on the real /dev/kvm, in one boot: the test makes a network namespace
//! with a tap holding the gateway address, runs a TCP server there, and runs kennel-vmm inside
//! the namespace with `--net tap=...`. The guest's `/init` (`kennel.test=net`) configures eth0,
//! connects to the server, exchanges a line, then moves 4 MiB each way with every byte checked.
//! All traffic stays inside the namespace. Prints the throughput figures (not asserted).

use kennel_tests::guest;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const TAP: &str = "kntap0";
const GATEWAY: &str = "10.77.0.1";
const GUEST: &str = "10.77.0.2";
const PORT: u16 = 7000;
const MAC: &str = "02:00:00:4b:4e:0a";
const BULK: usize = 4 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(420);
/// Smallest TSO frame in segments, on both ends. Guest kernel code is emulated on this kind of
/// host, so the round trip is long and TCP's TSO autosizing (about 1 ms of data per frame) falls
/// back to 2-segment frames; each frame costs the guest the same, so raising this (to 44 x 1448
/// bytes, one 64 KiB TSO frame) makes the guest-bound transfer several times faster.
const MIN_TSO_SEGS: u32 = 44;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a tap holding the gateway address; removed on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("kn-net-{}-{nanos:x}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"]);
        ip(&["-n", n, "addr", "add", &format!("{GATEWAY}/24"), "dev", TAP]);
        ip(&["-n", n, "link", "set", TAP, "up"]);
        ns
    }

    /// Runs `f` on a thread inside the namespace (the thread ends with it).
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns takes an open descriptor and a flag; it moves only this thread,
            // which ends when `f` returns.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    /// Binds a TCP listener inside the namespace. Also lets TCP there send 64 KiB TSO frames at
    /// low rates (see [`MIN_TSO_SEGS`]); /proc/sys/net belongs to the thread's namespace.
    fn listen(&self, addr: &str) -> TcpListener {
        let addr = addr.to_string();
        self.within(move || {
            std::fs::write(
                "/proc/sys/net/ipv4/tcp_min_tso_segs",
                MIN_TSO_SEGS.to_string(),
            )
            .expect("tcp_min_tso_segs in the namespace");
            TcpListener::bind(&addr).expect("bind in the namespace")
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.name, "link", "del", TAP])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// What the host side saw.
struct Served {
    greeting: String,
    up_secs: f64,
    down_secs: f64,
}

fn accept(listener: &TcpListener, stop: &AtomicBool) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::SeqCst) {
                    return Err("the VM ended before the guest connected".into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

fn serve(listener: TcpListener, stop: Arc<AtomicBool>) -> Result<Served, String> {
    let mut s = accept(&listener, &stop)?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("host tcp: {e}");
    let mut r = BufReader::new(s.try_clone().map_err(io)?);
    let mut greeting = String::new();
    r.read_line(&mut greeting).map_err(io)?;
    s.write_all(format!("hello guest, got: {}\n", greeting.trim()).as_bytes())
        .map_err(io)?;

    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    if line.trim() != format!("bulk {BULK}") {
        return Err(format!("expected the bulk header, got {line:?}"));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let mut first = None;
    while got < BULK {
        let want = (BULK - got).min(buf.len());
        let n = r.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(format!("guest closed after {got} of {BULK} bytes"));
        }
        first.get_or_insert_with(Instant::now);
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i)) {
            return Err(format!("upload byte {} differs", got + i));
        }
        got += n;
    }
    let up_secs = first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    s.write_all(format!("got {got}\n").as_bytes()).map_err(io)?;

    let chunk: Vec<u8> = (0..251 * 256).map(pattern).collect();
    let started = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        let n = (BULK - sent).min(chunk.len());
        s.write_all(&chunk[..n]).map_err(io)?;
        sent += n;
    }
    line.clear();
    r.read_line(&mut line).map_err(io)?;
    let down_secs = started.elapsed().as_secs_f64();
    if line.trim() != format!("done {BULK}") {
        return Err(format!("guest answered {line:?} to the download"));
    }
    Ok(Served {
        greeting: greeting.trim().to_string(),
        up_secs,
        down_secs,
    })
}

#[test]
fn guest_reaches_a_host_address_over_a_tap() {
    let vmlinux = guest::vmlinux().unwrap();
    let init = guest::test_init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "initrd.cpio", &init);

    let ns = Namespace::new();
    let listener = ns.listen(&format!("{GATEWAY}:{PORT}"));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = tx.send(serve(listener, stop));
        })
    };

    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(guest::workspace_bin("kennel-vmm"))
        .args(["run", "--mem", "128", "--timeout", "420", "--kernel"])
        .arg(&vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--net")
        .arg(format!("tap={TAP},mac={MAC}"))
        .arg("--cmdline")
        .arg(format!(
            "kennel.test=net kennel.net.addr={GUEST}/24 kennel.net.server={GATEWAY}:{PORT} kennel.net.bulk={BULK} kennel.net.min_tso_segs={MIN_TSO_SEGS}"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec kennel-vmm runs");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut console = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let log = log_thread.join().unwrap();
    let context = format!("--- console ---\n{console}\n--- kennel-vmm ---\n{log}");
    let served = rx.recv().unwrap();
    server.join().unwrap();
    assert!(status.success(), "exit {status:?}\n{context}");
    let served = served.unwrap_or_else(|e| panic!("host side: {e}\n{context}"));
    for expected in [
        format!("kennel-test-init: eth0 mac {MAC}"),
        format!("kennel-test-init: eth0 up with {GUEST}/24"),
        "kennel-test-init: tcp host replied: hello guest, got: hello from the guest over virtio-net"
            .into(),
        format!("kennel-test-init: tcp sent {BULK} bytes"),
        format!("kennel-test-init: tcp received {BULK} bytes"),
        "kennel-test-init: net checks passed".into(),
        "kennel-test-init: all checks passed".into(),
    ] {
        assert!(
            console.contains(&expected),
            "missing {expected:?}\n{context}"
        );
    }
    assert!(!console.contains("FAILED"), "{context}");
    assert_eq!(served.greeting, "hello from the guest over virtio-net");
    assert!(log.contains("guest stopped (reset)"), "{context}");
    if let Some(features) = console.lines().find(|l| l.contains("virtio features")) {
        eprintln!(
            "{features} (bit i = feature i: CSUM, GUEST_CSUM, MAC, TSO, EVENT_IDX, VERSION_1)"
        );
    }
    let stats = Command::new("ip")
        .args(["-n", &ns.name, "-s", "link", "show", TAP])
        .output()
        .unwrap();
    eprintln!(
        "tap statistics after the run:\n{}",
        String::from_utf8_lossy(&stats.stdout)
    );
    let mib = BULK as f64 / (1 << 20) as f64;
    eprintln!(
        "virtio-net throughput (this host's emulated guest kernel; not asserted): guest->host {:.2} MB/s ({mib} MiB in {:.2} s), host->guest {:.2} MB/s ({mib} MiB in {:.2} s)",
        BULK as f64 / served.up_secs.max(1e-9) / 1e6,
        served.up_secs,
        BULK as f64 / served.down_secs.max(1e-9) / 1e6,
        served.down_secs,
    );
}
