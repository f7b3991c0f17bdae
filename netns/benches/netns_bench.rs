//! Prints figures for node network operations, measured inside a network
//! namespace this program creates (root needed). Never asserts timings.
//!
//! `cargo bench -p netns` (or `cargo bench -p netns -- 200` for 200 rounds).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::ipam::{IpamStore, LinkKind};
use netns::{HostPortMapping, NetNs, NodeNetConfig, NodeNetwork};

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
fn ns(tag: &str) -> Ns {
    let name = format!("knb-{tag}-{}", std::process::id());
    sh(&["ip", "netns", "add", &name]);
    sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
    Ns(name)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:<44} n={n:<5} mean {:>8.3} ms  p50 {:>8.3} ms  p99 {:>8.3} ms",
        ms(total / n as u32),
        ms(samples[n / 2]),
        ms(samples[(n * 99 / 100).min(n - 1)])
    );
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let node = ns("node");
    let state = tempfile::tempdir().unwrap();
    let cfg = NodeNetConfig::new("10.248.0.0/16".parse().unwrap(), state.path());
    let (d, net) = time(|| NodeNetwork::setup_in(NetNs::named(&node.0), cfg.clone()).unwrap());
    report("node setup (bridge, sysctls, nft table)", vec![d]);
    let (d, net) = time(|| {
        drop(net);
        NodeNetwork::setup_in(NetNs::named(&node.0), cfg.clone()).unwrap()
    });
    report("node setup again (idempotent)", vec![d]);

    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for i in 0..rounds {
        let id = format!("vm-{i}");
        attach.push(time(|| net.attach(&id).unwrap()).0);
        detach.push(time(|| net.detach(&id).unwrap()).0);
    }
    report("attach tap (IPAM + tap + bridge port)", attach);
    report("detach tap", detach);

    // Peer: the same tap plumbing with iproute2 commands.
    let mut peer = Vec::new();
    for _ in 0..rounds {
        peer.push(
            time(|| {
                sh(&[
                    "ip", "-n", &node.0, "tuntap", "add", "dev", "kbpeer0", "mode", "tap",
                    "vnet_hdr",
                ]);
                sh(&[
                    "ip", "-n", &node.0, "link", "set", "kbpeer0", "master", "kennel0", "up",
                ]);
                sh(&["ip", "-n", &node.0, "link", "del", "kbpeer0"]);
            })
            .0,
        );
    }
    report("peer: ip tuntap add + set master/up + del", peer);

    let pod = ns("pod");
    let mut veth = Vec::new();
    for i in 0..rounds.min(20) {
        let id = format!("pod-{i}");
        veth.push(time(|| net.attach_veth(&id, &NetNs::named(&pod.0)).unwrap()).0);
        net.detach(&id).unwrap();
    }
    report("attach veth pod (both namespaces)", veth);

    net.attach("hp").unwrap();
    let mut hp = Vec::new();
    for i in 0..rounds {
        let m = [HostPortMapping::tcp(20000 + i as u16, 80)];
        hp.push(
            time(|| {
                net.add_host_ports("hp", &m).unwrap();
                net.remove_host_ports("hp", &m).unwrap();
            })
            .0,
        );
    }
    report("hostPort add + remove (nft transactions)", hp);

    for i in 0..rounds {
        net.attach(&format!("leak-{i}")).unwrap();
    }
    let (d, r) = time(|| net.reconcile(&["hp"]).unwrap());
    report(
        &format!("reconcile freeing {} sandboxes", r.released.len()),
        vec![d],
    );

    let dir = tempfile::tempdir().unwrap();
    let store = IpamStore::open(
        dir.path(),
        "10.0.0.0/16".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 1),
    )
    .unwrap();
    let mut ipam = Vec::new();
    for i in 0..rounds * 10 {
        let id = format!("s{i}");
        ipam.push(
            time(|| {
                store
                    .update(|s| s.allocate(&id, LinkKind::Tap).map(|r| r.0))
                    .unwrap()
            })
            .0,
        );
    }
    report("IPAM allocate (flock + read + fsync'd write)", ipam);
    net.teardown().unwrap();
}
