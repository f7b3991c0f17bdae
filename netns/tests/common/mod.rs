//! Helpers for tests that run inside network namespaces they create.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use netns::NetNs;

/// Generous timeout for anything network: the machine is shared and slow.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command and returns stdout; panics with stderr on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("knt-{tag}-{}-{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        TestNs { name }
    }

    pub fn ns(&self) -> NetNs {
        NetNs::named(&self.name)
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Names of all links in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.link_names().iter().any(|n| n == name)
    }

    /// `nft list ruleset` inside the namespace.
    pub fn nft_ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins two namespaces with a veth pair and addresses `a_addr`/`b_addr` (CIDR form).
pub fn wire(a: &TestNs, a_if: &str, a_addr: &str, b: &TestNs, b_if: &str, b_addr: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A TCP server in a namespace: for each connection it reads one line and
/// answers `"<tag> <line> from <peer ip>\n"`. Stops on drop.
pub struct TcpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEcho {
    pub fn start(ns: &NetNs, addr: SocketAddr, tag: &str) -> Self {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .expect("enter ns")
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tag = tag.to_string();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                        let mut line = String::new();
                        let mut reader = BufReader::new(&stream);
                        if reader.read_line(&mut line).is_ok() {
                            let reply = format!("{tag} {} from {}\n", line.trim(), peer.ip());
                            let _ = (&stream).write_all(reply.as_bytes());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        TcpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `addr`, sends `msg` and returns the reply line.
pub fn tcp_roundtrip(ns: &NetNs, addr: SocketAddr, msg: &str) -> std::io::Result<String> {
    let msg = msg.to_string();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply.trim().to_string())
    })
    .expect("enter ns")
}

/// A UDP server in a namespace answering each datagram with `"<tag> <msg>"`.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(ns: &NetNs, addr: SocketAddr, tag: &str) -> Self {
        let sock = ns
            .run(|| UdpSocket::bind(addr))
            .expect("enter ns")
            .unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tag = tag.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let reply = format!("{tag} {}", String::from_utf8_lossy(&buf[..n]));
                    let _ = sock.send_to(reply.as_bytes(), peer);
                }
            }
        });
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends one datagram from inside `ns` and waits for the answer (retrying a
/// few times, since UDP may drop the first packet while ARP resolves).
pub fn udp_roundtrip(ns: &NetNs, addr: SocketAddr, msg: &str) -> std::io::Result<String> {
    let msg = msg.to_string();
    ns.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 1500];
        let mut last = None;
        for _ in 0..10 {
            sock.send_to(msg.as_bytes(), addr)?;
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no reply")))
    })
    .expect("enter ns")
}
