//! Sync cost and per-connection overhead of kennel-proxy.
//!
//! `cargo bench -p kennel-proxy --bench proxy` (root: makes network
//! namespaces). For 1,000 and 10,000 Services (2 endpoints each; every 10th
//! a NodePort, every 20th with ClientIP affinity): the full sync (render +
//! `nft -f` into an empty namespace) and the incremental sync after one
//! endpoint change (render the partial transaction + apply), median of
//! several, and the script sizes. Then connect+request+close through a
//! ClusterIP vs straight to the pod, with the largest table loaded.
//! `KENNEL_BENCH_SERVICES=1000` (comma-separated sizes) measures fewer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use kennel_proxy::apply::Nft;
use kennel_proxy::model::{Endpoint, Model, NodeInfo, PortKey, Protocol, ServicePort};
use kennel_proxy::rules;
use netns::NetNs;

struct Ns(Vec<String>);
impl Drop for Ns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{args:?}");
}

fn ep(i: u32, local: bool) -> Endpoint {
    let [_, b, c, d] = (0x0a40_0000u32 + i).to_be_bytes();
    Endpoint {
        ip: Ipv4Addr::new(10, b, c, d),
        port: 8080,
        local,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn services(n: u32) -> Model {
    (0..n)
        .map(|i| {
            let [_, _, c, d] = i.to_be_bytes();
            let key = PortKey {
                namespace: format!("ns{}", i % 50),
                name: format!("svc-{i}"),
                protocol: Protocol::Tcp,
                port: 80,
            };
            let sp = ServicePort {
                key: key.clone(),
                cluster_ips: vec![Ipv4Addr::new(10, 96, c, d)],
                node_port: (i % 10 == 0).then(|| 30000 + (i % 2700) as u16),
                external_ips: vec![],
                affinity_timeout: (i % 20 == 0).then_some(10_800),
                external_local: false,
                internal_local: false,
                endpoints: vec![ep(2 * i, true), ep(2 * i + 1, false)],
            };
            (key, sp)
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn node() -> NodeInfo {
    NodeInfo {
        node_name: "n1".into(),
        node_ips: vec![Ipv4Addr::new(192, 168, 78, 1)],
        cluster_cidr: Some("10.64.0.0/10".parse().unwrap()),
    }
}

fn sync_bench(n: u32, ns: &str) -> rules::Ruleset {
    let nft = Nft::for_netns(Some(ns));
    let node = node();
    let mut model = services(n);
    let mut full = Vec::new();
    let mut full_render = Vec::new();
    let mut bytes = 0;
    let mut rs = rules::Ruleset::default();
    for _ in 0..3 {
        nft.delete_table("kennel-proxy").unwrap();
        let t = Instant::now();
        rs = rules::desired(&model, &node);
        let script = rules::render_full("kennel-proxy", &rs);
        full_render.push(t.elapsed());
        nft.apply(&script).unwrap();
        full.push(t.elapsed());
        bytes = script.len();
    }
    let mut inc = Vec::new();
    let mut inc_render = Vec::new();
    let mut inc_bytes = 0;
    let key = model.keys().nth(n as usize / 2).unwrap().clone();
    for round in 0..9u32 {
        let sp = model.get_mut(&key).unwrap();
        if round % 2 == 0 {
            sp.endpoints.push(ep(3_000_000 + round, true));
        } else {
            sp.endpoints.pop();
        }
        let t = Instant::now();
        let next = rules::desired(&model, &node);
        let script = rules::render_partial("kennel-proxy", &rs, &next);
        inc_render.push(t.elapsed());
        nft.apply(&script).unwrap();
        inc.push(t.elapsed());
        inc_bytes = script.len();
        rs = next;
    }
    println!(
        "{n:>6} services: full sync {:>9.1?} (render {:.1?}), script {} KiB, {} chains",
        median(full),
        median(full_render),
        bytes / 1024,
        rs.chains.len()
    );
    println!(
        "{n:>6} services: incremental sync after one endpoint change {:>7.2?} (render {:.2?}), script {} bytes",
        median(inc),
        median(inc_render),
        inc_bytes
    );
    rs
}

fn connect_loop(ns: &str, addr: SocketAddr, n: usize) -> Duration {
    NetNs::named(ns)
        .run(|| {
            let t = Instant::now();
            for _ in 0..n {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"x").unwrap();
                let mut b = Vec::new();
                s.read_to_end(&mut b).unwrap();
            }
            t.elapsed() / n as u32
        })
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let p = std::process::id();
    let (n, a, b) = (format!("kpb{p}"), format!("kpb{p}-a"), format!("kpb{p}-b"));
    let _g = Ns(vec![n.clone(), a.clone(), b.clone()]);
    for ns in [&n, &a, &b] {
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    // KENNEL_BENCH_SERVICES: the table sizes measured, comma-separated (default 1000,10000);
    // the largest stays loaded for the per-connection part.
    let sizes: Vec<u32> = std::env::var("KENNEL_BENCH_SERVICES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    for &size in &sizes {
        sync_bench(size, &n);
    }
    let loaded = sizes.iter().copied().max().unwrap_or(0);

    // Per-connection overhead with the largest table in place.
    sh(&["ip", "-n", &n, "link", "add", "kbr0", "type", "bridge"]);
    sh(&["ip", "-n", &n, "addr", "add", "10.64.0.1/10", "dev", "kbr0"]);
    sh(&["ip", "-n", &n, "link", "set", "kbr0", "up"]);
    for (pod, ip) in [(&a, "10.64.0.2"), (&b, "10.64.0.3")] {
        let host = format!("vh{}", &pod[pod.len() - 1..]);
        sh(&[
            "ip", "-n", &n, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
            pod,
        ]);
        sh(&["ip", "-n", &n, "link", "set", &host, "master", "kbr0", "up"]);
        sh(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            &format!("{ip}/10"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            pod,
            "route",
            "add",
            "default",
            "via",
            "10.64.0.1",
        ]);
    }
    NetNs::named(&n)
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap())
        .unwrap();
    let server = NetNs::named(&b)
        .run(|| TcpListener::bind("0.0.0.0:8080").unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for mut s in server.incoming().flatten() {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            let _ = s.write_all(b"ok");
        }
    });
    let mut model = services(loaded);
    let key = PortKey {
        namespace: "bench".into(),
        name: "target".into(),
        protocol: Protocol::Tcp,
        port: 80,
    };
    let mut target = ep(0, true);
    target.ip = Ipv4Addr::new(10, 64, 0, 3);
    model.insert(
        key.clone(),
        ServicePort {
            key,
            // Outside the pods' 10.64.0.0/10, so the client routes it to its gateway (the node).
            cluster_ips: vec![Ipv4Addr::new(172, 30, 0, 1)],
            node_port: None,
            external_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            endpoints: vec![target],
        },
    );
    let nft = Nft::for_netns(Some(&n));
    nft.apply(&rules::render_full(
        "kennel-proxy",
        &rules::desired(&model, &node()),
    ))
    .unwrap();
    let direct = SocketAddr::from(([10, 64, 0, 3], 8080));
    let via = SocketAddr::from(([172, 30, 0, 1], 80));
    // Wait for the links to come up (first ARP) before timing anything.
    let t = Instant::now();
    while NetNs::named(&a)
        .run(|| TcpStream::connect_timeout(&direct, Duration::from_millis(200)).is_err())
        .unwrap()
    {
        assert!(t.elapsed() < Duration::from_secs(10), "pod b unreachable");
        std::thread::sleep(Duration::from_millis(50));
    }
    connect_loop(&a, direct, 200);
    connect_loop(&a, via, 200);
    let rounds = 2000;
    let d = median((0..3).map(|_| connect_loop(&a, direct, rounds)).collect());
    let v = median((0..3).map(|_| connect_loop(&a, via, rounds)).collect());
    println!(
        "connect+request+close from a pod: direct to pod {d:.1?}, via ClusterIP {v:.1?} (+{:.1?}) per connection, {} Services loaded",
        v.saturating_sub(d),
        loaded + 1
    );
    let _ = nft.delete_table("kennel-proxy");
}
