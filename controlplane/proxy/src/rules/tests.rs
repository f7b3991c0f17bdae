use std::net::Ipv4Addr;

use super::*;
use crate::model::{Endpoint, PortKey, Protocol, ServicePort};

pub(crate) fn node() -> NodeInfo {
    NodeInfo {
        node_name: "n1".into(),
        node_ips: vec![Ipv4Addr::new(192, 0, 2, 10)],
        cluster_cidr: Some("10.1.0.0/16".parse().unwrap()),
    }
}

pub(crate) fn ep(last: u8, local: bool) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::new(10, 1, 0, last),
        port: 8080,
        local,
        ready: true,
        serving: true,
        terminating: false,
    }
}

pub(crate) fn sp(name: &str, ip: u8, eps: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        key: PortKey {
            namespace: "default".into(),
            name: name.into(),
            protocol: Protocol::Tcp,
            port: 80,
        },
        cluster_ips: vec![Ipv4Addr::new(10, 96, 0, ip)],
        node_port: None,
        external_ips: vec![],
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        endpoints: eps,
    }
}

pub(crate) fn model(ports: Vec<ServicePort>) -> Model {
    ports.into_iter().map(|p| (p.key.clone(), p)).collect()
}

#[test]
fn names_are_valid_and_stable() {
    let k = sp("web", 1, vec![]).key;
    let c = service_chain(&k);
    assert_eq!(c, service_chain(&k.clone()));
    assert!(
        c.starts_with("service-") && c.ends_with("-default/web/tcp/80"),
        "{c}"
    );
    assert_eq!(c.len(), "service-".len() + 8 + "-default/web/tcp/80".len());
    let e = ep(2, true);
    for name in [
        c,
        local_chain(&k),
        external_chain(&k),
        endpoint_chain(&k, &e),
        affinity_set(&k, &e),
    ] {
        assert!(is_nft_identifier(&name), "{name}");
    }
    assert_ne!(endpoint_chain(&k, &e), endpoint_chain(&k, &ep(3, true)));
    assert!(!is_nft_identifier("1abc") && !is_nft_identifier("a b"));
    // Golden: the hash is part of the contract (kernel state survives restarts).
    assert_eq!(hash8("default/web/tcp/80").len(), 8);
    assert_eq!(hash8("x"), hash8("x"));
}

#[test]
fn cluster_ip_with_endpoints() {
    let m = model(vec![sp("web", 1, vec![ep(2, true), ep(3, false)])]);
    let rs = desired(&m, &node());
    let k = &m.values().next().unwrap().key;
    let svc = &rs.chains[&service_chain(k)];
    assert_eq!(svc[0], "ip saddr != 10.1.0.0/16 jump mark-for-masquerade");
    assert_eq!(
        svc[1],
        format!(
            "numgen random mod 2 vmap {{ 0 : goto {}, 1 : goto {} }}",
            endpoint_chain(k, &ep(2, true)),
            endpoint_chain(k, &ep(3, false))
        )
    );
    let e = &rs.chains[&endpoint_chain(k, &ep(2, true))];
    assert_eq!(
        e,
        &vec![
            "ip saddr 10.1.0.0/16 jump mark-for-masquerade".to_string(),
            "meta l4proto tcp dnat to 10.1.0.2:8080".to_string()
        ]
    );
    assert_eq!(
        rs.elements[SERVICE_IPS]["10.96.0.1 . tcp . 80"],
        format!("goto {}", service_chain(k))
    );
    assert!(rs.elements[CLUSTER_IPS].contains_key("10.96.0.1"));
    assert!(rs.elements[NO_ENDPOINT_SERVICES].is_empty());
    assert_eq!(rs.chains.len(), 3);
}

#[test]
fn no_endpoints_rejects() {
    let m = model(vec![sp("empty", 2, vec![])]);
    let rs = desired(&m, &node());
    assert!(rs.chains.is_empty());
    assert_eq!(
        rs.elements[NO_ENDPOINT_SERVICES]["10.96.0.2 . tcp . 80"],
        "goto reject-chain"
    );
    assert!(rs.elements[SERVICE_IPS].is_empty());
    // not-ready endpoints do not count
    let mut e = ep(2, true);
    e.ready = false;
    e.serving = false;
    let rs = desired(&model(vec![sp("empty", 2, vec![e])]), &node());
    assert!(rs.chains.is_empty());
}

#[test]
fn affinity_sets() {
    let mut p = sp("sticky", 3, vec![ep(2, true), ep(3, true)]);
    p.affinity_timeout = Some(60);
    let m = model(vec![p]);
    let rs = desired(&m, &node());
    let k = &m.values().next().unwrap().key;
    assert_eq!(rs.sets.len(), 2);
    let svc = &rs.chains[&service_chain(k)];
    assert_eq!(
        svc[1],
        format!(
            "ip saddr @{} goto {}",
            affinity_set(k, &ep(2, true)),
            endpoint_chain(k, &ep(2, true))
        )
    );
    assert!(svc[3].starts_with("numgen random mod 2"));
    let e = &rs.chains[&endpoint_chain(k, &ep(3, true))];
    assert_eq!(
        e[1],
        format!(
            "update @{} {{ ip saddr timeout 60s }}",
            affinity_set(k, &ep(3, true))
        )
    );
}

#[test]
fn local_policies() {
    // externalTrafficPolicy: Local, NodePort, one local and one remote endpoint.
    let mut p = sp("loc", 4, vec![ep(2, true), ep(3, false)]);
    p.node_port = Some(30080);
    p.external_local = true;
    let m = model(vec![p.clone()]);
    let rs = desired(&m, &node());
    let k = &p.key;
    let ext = &rs.chains[&external_chain(k)];
    assert_eq!(
        ext,
        &vec![
            format!("ip saddr 10.1.0.0/16 goto {}", service_chain(k)),
            "fib saddr type local jump mark-for-masquerade".to_string(),
            format!("fib saddr type local goto {}", service_chain(k)),
            format!("goto {}", local_chain(k)),
        ]
    );
    let local = &rs.chains[&local_chain(k)];
    assert_eq!(local.len(), 1);
    assert!(local[0].contains("mod 1") && !local[0].contains("mark-for-masquerade"));
    assert_eq!(
        rs.elements[SERVICE_NODEPORTS]["tcp . 30080"],
        format!("goto {}", external_chain(k))
    );
    // Local with no local endpoint: outside traffic dropped, pods still served.
    p.endpoints = vec![ep(3, false)];
    let rs = desired(&model(vec![p.clone()]), &node());
    assert_eq!(rs.chains[&external_chain(k)].last().unwrap(), "drop");
    assert!(!rs.chains.contains_key(&local_chain(k)));
    // internalTrafficPolicy: Local without a local endpoint: ClusterIP drops.
    let mut q = sp("iloc", 5, vec![ep(3, false)]);
    q.internal_local = true;
    let rs = desired(&model(vec![q]), &node());
    assert_eq!(
        rs.elements[NO_ENDPOINT_SERVICES]["10.96.0.5 . tcp . 80"],
        "drop"
    );
    // cluster policy NodePort masquerades
    let mut c = sp("np", 6, vec![ep(3, false)]);
    c.node_port = Some(30081);
    let rs = desired(&model(vec![c.clone()]), &node());
    assert_eq!(
        rs.chains[&external_chain(&c.key)][0],
        "jump mark-for-masquerade"
    );
}

#[test]
fn partial_sync_touches_only_the_changed_service() {
    let a = sp("a", 1, vec![ep(2, true), ep(3, true)]);
    let b = sp("b", 2, vec![ep(4, true)]);
    let old = desired(&model(vec![a.clone(), b.clone()]), &node());
    assert_eq!(render_partial("t", &old, &old), "");
    let mut b2 = b.clone();
    b2.endpoints.push(ep(5, true));
    let new = desired(&model(vec![a.clone(), b2]), &node());
    let s = render_partial("t", &old, &new);
    assert!(!s.contains("/a/"), "{s}");
    let lines: Vec<&str> = s.lines().collect();
    let bk = &b.key;
    assert_eq!(
        lines,
        vec![
            format!("add chain ip t {}", endpoint_chain(bk, &ep(5, true))),
            format!(
                "add rule ip t {} ip saddr 10.1.0.0/16 jump mark-for-masquerade",
                endpoint_chain(bk, &ep(5, true))
            ),
            format!(
                "add rule ip t {} meta l4proto tcp dnat to 10.1.0.5:8080",
                endpoint_chain(bk, &ep(5, true))
            ),
            format!("flush chain ip t {}", service_chain(bk)),
            format!(
                "add rule ip t {} ip saddr != 10.1.0.0/16 jump mark-for-masquerade",
                service_chain(bk)
            ),
            format!(
                "add rule ip t {} numgen random mod 2 vmap {{ 0 : goto {}, 1 : goto {} }}",
                service_chain(bk),
                endpoint_chain(bk, &ep(4, true)),
                endpoint_chain(bk, &ep(5, true))
            ),
        ]
    );
    // Removing every endpoint: map element moves, chains are deleted.
    let mut b3 = b.clone();
    b3.endpoints.clear();
    let gone = desired(&model(vec![a, b3]), &node());
    let s = render_partial("t", &old, &gone);
    assert!(
        s.contains("delete element ip t service-ips { 10.96.0.2 . tcp . 80 }"),
        "{s}"
    );
    assert!(s.contains(
        "add element ip t no-endpoint-services { 10.96.0.2 . tcp . 80 : goto reject-chain }"
    ));
    assert!(s.contains(&format!("delete chain ip t {}", service_chain(bk))));
    assert!(s.contains(&format!(
        "delete chain ip t {}",
        endpoint_chain(bk, &ep(4, true))
    )));
    assert!(s.find("delete element").unwrap() < s.find("delete chain").unwrap());
    assert!(!s.contains("/a/"));
}

#[test]
fn full_render_replaces_the_table() {
    let rs = desired(&model(vec![sp("a", 1, vec![ep(2, true)])]), &node());
    let s = render_full("kennel-proxy", &rs);
    assert!(s.starts_with(
        "add table ip kennel-proxy\ndelete table ip kennel-proxy\ntable ip kennel-proxy {"
    ));
    assert!(s.contains("type nat hook prerouting priority dstnat"));
    assert!(s.contains("add element ip kennel-proxy cluster-ips { 10.96.0.1 }"));
}

/// A throwaway network namespace, deleted on drop (even on panic).
struct TempNs(String);

impl TempNs {
    fn new(tag: &str) -> Self {
        let name = format!("kproxy-{tag}-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        TempNs(name)
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn everything() -> Vec<ServicePort> {
    let mut sticky = sp("sticky", 1, vec![ep(2, true), ep(3, false)]);
    sticky.affinity_timeout = Some(30);
    let mut lb = sp("lb", 2, vec![ep(2, true), ep(3, false)]);
    lb.node_port = Some(30080);
    lb.external_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
    lb.external_local = true;
    lb.internal_local = true;
    let mut udp = sp("dns", 3, vec![ep(4, true)]);
    udp.key.protocol = Protocol::Udp;
    udp.key.port = 53;
    let mut np_empty = sp("np-empty", 4, vec![]);
    np_empty.node_port = Some(30081);
    let mut loc_remote = sp("loc-remote", 5, vec![ep(3, false)]);
    loc_remote.node_port = Some(30082);
    loc_remote.external_local = true;
    loc_remote.internal_local = true;
    vec![
        sticky,
        lb,
        udp,
        np_empty,
        loc_remote,
        sp("plain", 6, vec![ep(5, true)]),
    ]
}

#[test]
fn nft_accepts_every_script_kind() {
    let ns = TempNs::new("unit");
    let nft = crate::apply::Nft::for_netns(Some(&ns.0));
    let table = "kennel-proxy";
    let n = node();
    let all = desired(&model(everything()), &n);
    let full = render_full(table, &all);
    nft.check(&full).unwrap_or_else(|e| panic!("{e}\n{full}"));
    nft.apply(&full).unwrap();
    // A second full sync over an existing table converges (restart).
    nft.apply(&full).unwrap();

    let mut steps: Vec<Vec<ServicePort>> = Vec::new();
    let mut s = everything();
    s[0].endpoints.push(ep(9, true)); // endpoint added
    steps.push(s.clone());
    s[0].endpoints.remove(0); // endpoint removed
    steps.push(s.clone());
    s[0].affinity_timeout = None; // affinity off: sets deleted
    s[1].endpoints.clear(); // LB loses all endpoints
    steps.push(s.clone());
    s.remove(5); // service deleted
    steps.push(s.clone());
    steps.push(everything()); // and back
    steps.push(vec![]); // everything gone
    let mut cur = all;
    for (i, ports) in steps.into_iter().enumerate() {
        let next = desired(&model(ports), &n);
        let script = render_partial(table, &cur, &next);
        nft.check(&script)
            .unwrap_or_else(|e| panic!("step {i}: {e}\n{script}"));
        nft.apply(&script).unwrap();
        cur = next;
    }
    let listed = nft.list_table(table).unwrap().unwrap();
    assert!(!listed.contains("default/"), "{listed}");
    assert!(!listed.contains("set affinity-"), "{listed}");
    nft.delete_table(table).unwrap();
    assert!(nft.list_table(table).unwrap().is_none());
}
