//! Queries/s and latency of kennel-dns on one core, beside BIND 9 serving the same records
//! from a zone file on the same core (CoreDNS is not packaged here). Debian's `dnsperf` sends
//! the load from the other core; a closed-loop probe (one query outstanding) measures p50/p99
//! latency while the load runs (dnsperf 2.10 prints no percentiles).
//!
//! `cargo bench -p kennel-dns --bench dns` (env `KENNEL_BENCH_SERVICES`, default 1000;
//! `KENNEL_BENCH_SECONDS`, default 10).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use kennel_apiserver::testing::TestApiServer;
use kennel_dns::DnsConfig;
use kube::api::{Api, PostParams};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// The dnsperf query file: 80 % Service A records, 10 % SRV, 10 % names that do not exist.
fn query_file(services: &HashMap<String, String>, dir: &std::path::Path) -> std::path::PathBuf {
    let mut names: Vec<&String> = services.keys().collect();
    names.sort();
    let mut text = String::new();
    for (i, n) in names.iter().enumerate() {
        let _ = writeln!(text, "{n}.default.svc.cluster.local A");
        if i % 8 == 0 {
            let _ = writeln!(text, "_http._tcp.{n}.default.svc.cluster.local SRV");
            let _ = writeln!(text, "missing-{i}.default.svc.cluster.local A");
        }
    }
    let p = dir.join("queries.txt");
    std::fs::write(&p, text).expect("write queries");
    p
}

/// The same records as a BIND zone file.
fn zone_file(services: &HashMap<String, String>, dir: &std::path::Path) -> std::path::PathBuf {
    let mut z = String::from(
        "$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n",
    );
    for (n, ip) in services {
        let _ = writeln!(z, "{n}.default.svc IN A {ip}");
        let _ = writeln!(
            z,
            "_http._tcp.{n}.default.svc IN SRV 0 100 80 {n}.default.svc.cluster.local."
        );
    }
    let p = dir.join("cluster.local.zone");
    std::fs::write(&p, z).expect("write zone");
    p
}

struct Named(Child);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_named(dir: &std::path::Path, zone: &std::path::Path, port: u16) -> Option<Named> {
    let conf = dir.join("named.conf");
    std::fs::write(
        &conf,
        format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; }};\nzone \"cluster.local\" {{ type primary; file \"{z}\"; }};\n",
            d = dir.display(),
            z = zone.display()
        ),
    )
    .ok()?;
    let child = Command::new("taskset")
        .args(["-c", "0", "named", "-g", "-n", "1", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Named(child))
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii(name).expect("name"),
            RecordType::A,
        ));
    m.to_vec().expect("encode")
}

/// Waits until `server` answers a query for `name`.
fn wait_answering(server: SocketAddr, name: &str) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let q = query(name);
    let mut buf = [0u8; 1500];
    for _ in 0..150 {
        let _ = sock.send_to(&q, server);
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if Message::from_vec(&buf[..n]).is_ok_and(|m| !m.answers().is_empty()) {
                return true;
            }
        }
    }
    false
}

/// Closed-loop latency probe on core 1 for `secs`: (p50, p99) in µs.
fn probe(server: SocketAddr, names: &[String], secs: u64) -> (f64, f64) {
    pin(1);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let mut lat = Vec::new();
    let mut buf = [0u8; 1500];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0;
    while Instant::now() < end {
        let q = query(&format!(
            "{}.default.svc.cluster.local",
            names[i % names.len()]
        ));
        i += 1;
        let t = Instant::now();
        if sock.send_to(&q, server).is_err() {
            continue;
        }
        if sock.recv_from(&mut buf).is_ok() {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| {
        lat.get(((lat.len() as f64) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.50), at(0.99))
}

struct Row {
    qps: f64,
    lost: String,
    p50: f64,
    p99: f64,
}

/// dnsperf from core 1 for `secs`, with the probe alongside.
fn measure(server: SocketAddr, queries: &std::path::Path, names: &[String], secs: u64) -> Row {
    let names = names.to_vec();
    let probe = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        probe(server, &names, secs.saturating_sub(2).max(1))
    });
    let out = Command::new("taskset")
        .args(["-c", "1", "dnsperf", "-s", &server.ip().to_string()])
        .args(["-p", &server.port().to_string(), "-d"])
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", "4", "-q", "200"])
        .output()
        .expect("dnsperf runs (Debian dnsperf)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let qps = field("Queries per second:").parse().unwrap_or(f64::NAN);
    let lost = field("Queries lost:");
    let (p50, p99) = probe.join().expect("probe");
    Row {
        qps,
        lost,
        p50,
        p99,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_or("KENNEL_BENCH_SERVICES", 1000);
    let secs = env_or("KENNEL_BENCH_SECONDS", 10);
    let cluster = TestApiServer::start().await;
    let svcs: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let creates = chunk.iter().map(|i| {
            let svcs = svcs.clone();
            async move {
                let s: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": format!("a{i}")}},
                }))
                .expect("service");
                svcs.create(&PostParams::default(), &s)
                    .await
                    .expect("create service")
            }
        });
        futures::future::join_all(creates).await;
    }
    let services: HashMap<String, String> = svcs
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
        .filter_map(|s| Some((s.metadata.name?, s.spec?.cluster_ip?)))
        .collect();
    println!(
        "{} Services created in {:.1} s",
        services.len(),
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = query_file(&services, dir.path());
    let mut names: Vec<String> = services.keys().cloned().collect();
    names.sort();

    // kennel-dns on its own single-threaded runtime pinned to core 0.
    let kubeconfig = cluster.api.kubeconfig.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pin(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = kennel_apiserver::testing::client_from(&kubeconfig).await;
            let mut cfg = DnsConfig::new(vec!["127.0.0.1:0".parse().expect("addr")]);
            cfg.upstreams = Vec::new();
            let dns = kennel_dns::serve(cfg, client).await.expect("serve");
            dns.ready().await;
            tx.send(dns.addrs[0]).expect("send address");
            futures::future::pending::<()>().await;
        });
    });
    let kennel = rx.recv().expect("kennel-dns address");
    let first = format!("{}.default.svc.cluster.local", names[0]);
    assert!(wait_answering(kennel, &first), "kennel-dns answers");
    let kennel_row = measure(kennel, &queries, &names, secs);

    let zone = zone_file(&services, dir.path());
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let bind_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let named = start_named(dir.path(), &zone, port);
    let bind_row = named
        .as_ref()
        .filter(|_| wait_answering(bind_addr, &first))
        .map(|_| measure(bind_addr, &queries, &names, secs));

    println!();
    println!("DNS on one core (server pinned to core 0, dnsperf -c 4 -q 200 and the probe on core 1), {} Services, {secs} s", services.len());
    println!("| server | queries/s | lost | p50 (µs) | p99 (µs) |");
    println!("| --- | ---: | --- | ---: | ---: |");
    let print = |name: &str, r: &Row| {
        println!(
            "| {name} | {:.0} | {} | {:.0} | {:.0} |",
            r.qps, r.lost, r.p50, r.p99
        )
    };
    print("kennel-dns", &kennel_row);
    match &bind_row {
        Some(r) => print("BIND 9 (named -n 1, same records from a zone file)", r),
        None => println!("| BIND 9 | not run (named did not start) | | | |"),
    }
    drop(named);
}
