//! Real pod networking inside network namespaces these tests create: the
//! node, the pods and an outside client are each a namespace; the machine's
//! own network is never touched.

mod common;
#[path = "common/frames.rs"]
mod frames;

use std::net::{Ipv4Addr, SocketAddr};

use common::{tcp_roundtrip, udp_roundtrip, wire, TcpEcho, TestNs, UdpEcho};
use netns::{
    ConfigError, HostPortMapping, IpamError, NodeError, NodeNetConfig, NodeNetwork, PodInterface,
};

fn config(cidr: &str, state: &tempfile::TempDir) -> NodeNetConfig {
    NodeNetConfig::new(cidr.parse().unwrap(), state.path())
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn two_pods_talk_across_the_bridge_and_host_ports_reach_them() {
    let node = TestNs::new("node");
    let pod_a = TestNs::new("pa");
    let pod_b = TestNs::new("pb");
    let outside = TestNs::new("out");
    let state = tempfile::tempdir().unwrap();
    // The node's uplink: 192.0.2.1 on the node, a client at 192.0.2.2.
    wire(
        &node,
        "uplink0",
        "192.0.2.1/24",
        &outside,
        "eth0",
        "192.0.2.2/24",
    );
    let node_addr = Ipv4Addr::new(192, 0, 2, 1);

    let net = NodeNetwork::setup_in(node.ns(), config("10.244.7.0/24", &state)).unwrap();
    assert_eq!(net.gateway(), Ipv4Addr::new(10, 244, 7, 1));
    let a = net.attach_veth("pod-a", &pod_a.ns()).unwrap();
    let b = net.attach_veth("pod-b", &pod_b.ns()).unwrap();
    assert_ne!(a.ip, b.ip, "distinct addresses");
    let cidr: ipnet::Ipv4Net = "10.244.7.0/24".parse().unwrap();
    assert!(cidr.contains(&a.ip) && cidr.contains(&b.ip));
    assert_ne!(a.mac, b.mac);
    // The pod end carries the pod's MAC and address; the host end is on the bridge.
    let eth0 = pod_b.ip(&["addr", "show", "eth0"]);
    assert!(eth0.contains(&format!("{}/24", b.ip)), "{eth0}");
    assert!(eth0.contains(&b.mac.to_string()), "{eth0}");
    let PodInterface::Veth { host, .. } = &b.interface else {
        panic!("veth expected")
    };
    assert!(node.ip(&["link", "show", host]).contains("master kennel0"));
    // Attaching again is idempotent.
    assert_eq!(net.attach_veth("pod-b", &pod_b.ns()).unwrap(), b);

    let _web = TcpEcho::start(&pod_b.ns(), sa(b.ip, 8080), "pod-b");
    let _dns = UdpEcho::start(&pod_b.ns(), sa(b.ip, 5353), "pod-b-udp");

    // Pod to pod across the bridge, with the pod's own source address.
    let reply = tcp_roundtrip(&pod_a.ns(), sa(b.ip, 8080), "hello").unwrap();
    assert_eq!(reply, format!("pod-b hello from {}", a.ip));
    // Node to pod.
    let reply = tcp_roundtrip(&node.ns(), sa(b.ip, 8080), "node").unwrap();
    assert!(reply.starts_with("pod-b node from "), "{reply}");

    // hostPorts: TCP via the node address (from outside and from the node
    // itself) and via 127.0.0.1; UDP from outside.
    net.add_host_ports(
        "pod-b",
        &[
            HostPortMapping::tcp(18080, 8080),
            HostPortMapping::udp(15353, 5353),
        ],
    )
    .unwrap();
    net.add_host_ports("pod-b", &[HostPortMapping::tcp(18080, 8080)])
        .unwrap(); // idempotent
    let reply = tcp_roundtrip(&outside.ns(), sa(node_addr, 18080), "outside").unwrap();
    assert_eq!(reply, "pod-b outside from 192.0.2.2");
    let reply = tcp_roundtrip(&node.ns(), sa(node_addr, 18080), "node-addr").unwrap();
    assert!(reply.starts_with("pod-b node-addr"), "{reply}");
    let reply = tcp_roundtrip(&node.ns(), sa(Ipv4Addr::LOCALHOST, 18080), "loopback").unwrap();
    assert!(reply.starts_with("pod-b loopback"), "{reply}");
    let reply = udp_roundtrip(&outside.ns(), sa(node_addr, 15353), "dgram").unwrap();
    assert_eq!(reply, "pod-b-udp dgram");

    // Pods reach hostPorts through the node address too: another pod, and
    // the serving pod itself (hairpin), both answered via the gateway.
    let reply = tcp_roundtrip(&pod_a.ns(), sa(node_addr, 18080), "from-a").unwrap();
    assert_eq!(reply, format!("pod-b from-a from {}", net.gateway()));
    let reply = tcp_roundtrip(&pod_b.ns(), sa(node_addr, 18080), "hairpin").unwrap();
    assert_eq!(reply, format!("pod-b hairpin from {}", net.gateway()));

    // A port held by one pod cannot be given to another.
    let err = net
        .add_host_ports("pod-a", &[HostPortMapping::tcp(18080, 80)])
        .unwrap_err();
    assert!(matches!(err, NodeError::HostPortInUse { .. }), "{err}");
    assert!(err.to_string().contains("pod-b"), "{err}");
    let err = net
        .add_host_ports("nobody", &[HostPortMapping::tcp(1, 1)])
        .unwrap_err();
    assert!(matches!(err, NodeError::NotAttached(_)), "{err}");

    // Egress leaves the node masqueraded: the outside client has no route to
    // the pod CIDR and sees the node's address.
    let _ext = TcpEcho::start(&outside.ns(), sa(Ipv4Addr::new(192, 0, 2, 2), 9000), "ext");
    let reply =
        tcp_roundtrip(&pod_a.ns(), sa(Ipv4Addr::new(192, 0, 2, 2), 9000), "egress").unwrap();
    assert_eq!(reply, "ext egress from 192.0.2.1");

    // Teardown removes the link, the hostPort rules and the allocation.
    net.detach("pod-b").unwrap();
    net.detach("pod-b").unwrap(); // idempotent
    assert!(!node.has_link(host));
    let rules = node.nft_ruleset();
    assert!(
        !rules.contains("18080") && !rules.contains("15353"),
        "{rules}"
    );
    assert!(tcp_roundtrip(&node.ns(), sa(Ipv4Addr::LOCALHOST, 18080), "gone").is_err());
    let st = net.ipam_state().unwrap();
    assert!(!st.sandboxes.contains_key("pod-b"));
    assert!(st.sandboxes.contains_key("pod-a"));
    net.detach("pod-a").unwrap();
    assert!(net.ipam_state().unwrap().sandboxes.is_empty());
    net.teardown().unwrap();
    assert!(!node.has_link("kennel0"));
    assert!(!node.nft_ruleset().contains("kennel"));
}

#[test]
fn tap_is_persistent_on_the_bridge_and_openable_then_torn_down() {
    let node = TestNs::new("tap");
    let state = tempfile::tempdir().unwrap();
    let net = NodeNetwork::setup_in(node.ns(), config("10.245.0.0/24", &state)).unwrap();
    let pod = net.attach("vm-1").unwrap();
    let tap = pod.tap_name().unwrap().to_string();
    assert!(tap.len() <= 15);
    assert_eq!(pod.ip, Ipv4Addr::new(10, 245, 0, 2));
    assert_eq!(pod.gateway, Ipv4Addr::new(10, 245, 0, 1));
    assert_eq!(pod.prefix_len, 24);
    assert_eq!(pod.routes.len(), 1);
    assert_eq!(
        pod.kernel_ip_arg("eth0"),
        "ip=10.245.0.2::10.245.0.1:255.255.255.0::eth0:off"
    );
    assert_eq!(
        pod.mac.octets()[0] & 0x03,
        0x02,
        "locally administered unicast"
    );

    let details = node.ip(&["-d", "link", "show", &tap]);
    assert!(details.contains("master kennel0"), "{details}");
    assert!(details.contains("tun type tap"), "{details}");
    assert!(details.contains("vnet_hdr on"), "{details}");
    assert!(details.contains("persist on"), "{details}");
    assert!(details.contains("user root"), "{details}");
    assert!(details.contains("hairpin on"), "{details}");
    // The guest MAC must differ from the bridge port's own address.
    assert!(!details.contains(&pod.mac.to_string()), "{details}");

    // A later process (the VMM) attaches to it by name, and frames it sends
    // as the guest reach the node: ARP for the gateway, then a ping of it.
    let mut queue = netns::open_tap(&node.ns(), &tap).unwrap();
    let guest = pod.mac.octets();
    let arp = frames::arp_request(guest, pod.ip, pod.gateway);
    let reply = frames::exchange(&mut queue, &arp, |f| {
        frames::arp_reply_from(f, pod.gateway, guest).is_some()
    })
    .expect("ARP reply from the gateway through the tap");
    let gw_mac = frames::arp_reply_from(&reply, pod.gateway, guest).unwrap();
    let ping = frames::icmp_echo(guest, gw_mac, pod.ip, pod.gateway, 0x4b31);
    frames::exchange(&mut queue, &ping, |f| {
        frames::is_echo_reply(f, pod.gateway, pod.ip, 0x4b31)
    })
    .expect("ICMP echo reply from the gateway through the tap");
    drop(queue);
    assert!(node.has_link(&tap), "tap survives its opener (persistent)");
    // A virtio 1.0 device uses a 12-byte header; lengths below 10 are refused.
    netns::open_tap_with_vnet_hdr_len(&node.ns(), &tap, 12).unwrap();
    assert!(netns::open_tap_with_vnet_hdr_len(&node.ns(), &tap, 4).is_err());
    let json = serde_json::to_string(&pod).unwrap();
    assert_eq!(
        serde_json::from_str::<netns::PodNetwork>(&json).unwrap(),
        pod
    );

    // Same id, same network.
    assert_eq!(net.attach("vm-1").unwrap(), pod);
    let other = net.attach("vm-2").unwrap();
    assert_ne!(other.ip, pod.ip);
    assert_ne!(other.tap_name(), pod.tap_name());
    let err = net.attach_veth("vm-1", &node.ns()).unwrap_err();
    assert!(matches!(err, NodeError::KindMismatch { .. }), "{err}");

    net.detach("vm-1").unwrap();
    net.detach("vm-1").unwrap();
    assert!(!node.has_link(&tap));
    assert!(net.pod("vm-1").unwrap().is_none());
    assert!(net.pod("vm-2").unwrap().is_some());
    // The state file on disk reflects it.
    let on_disk = std::fs::read_to_string(state.path().join("ipam.json")).unwrap();
    assert!(
        on_disk.contains("vm-2") && !on_disk.contains("vm-1"),
        "{on_disk}"
    );
}

#[test]
fn crash_then_reconcile_frees_leaked_addresses_links_and_rules() {
    let node = TestNs::new("crash");
    let state = tempfile::tempdir().unwrap();
    let cfg = config("10.246.0.0/24", &state);
    let (ip1, tap2) = {
        let net = NodeNetwork::setup_in(node.ns(), cfg.clone()).unwrap();
        let p1 = net.attach("vm-1").unwrap();
        let p2 = net.attach("vm-2").unwrap();
        net.attach("vm-3").unwrap();
        net.add_host_ports("vm-2", &[HostPortMapping::tcp(30080, 80)])
            .unwrap();
        (p1.ip, p2.tap_name().unwrap().to_string())
        // "Crash": the process goes away without detaching anything.
    };
    // A tap left over on the bridge by a crash before its id was recorded.
    node.ip(&["tuntap", "add", "dev", "ktapdeadbeef00", "mode", "tap"]);
    node.ip(&["link", "set", "ktapdeadbeef00", "master", "kennel0"]);
    assert!(node.nft_ruleset().contains("30080"));

    // Restart: setup again is idempotent and keeps the state.
    let net = NodeNetwork::setup_in(node.ns(), cfg).unwrap();
    assert_eq!(net.ipam_state().unwrap().sandboxes.len(), 3);
    assert!(
        node.nft_ruleset().contains("30080"),
        "hostPorts restored on setup"
    );

    let report = net.reconcile(&["vm-1"]).unwrap();
    assert_eq!(
        report.released,
        vec!["vm-2".to_string(), "vm-3".to_string()]
    );
    assert_eq!(report.removed_links, vec!["ktapdeadbeef00".to_string()]);
    let st = net.ipam_state().unwrap();
    assert_eq!(st.sandboxes.keys().collect::<Vec<_>>(), vec!["vm-1"]);
    assert!(!node.has_link(&tap2) && !node.has_link("ktapdeadbeef00"));
    assert!(node.has_link(net.pod("vm-1").unwrap().unwrap().tap_name().unwrap()));
    assert!(!node.nft_ruleset().contains("30080"));
    // Reconcile again changes nothing; the survivor keeps its address.
    assert_eq!(net.reconcile(&["vm-1"]).unwrap(), Default::default());
    assert_eq!(net.attach("vm-1").unwrap().ip, ip1);
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing_behind() {
    let node = TestNs::new("bad");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("net");
    let links_before = node.link_names();

    // A bridge name longer than a link name can be.
    let mut cfg = NodeNetConfig::new("10.50.3.0/24".parse().unwrap(), &state_dir);
    cfg.bridge = "kennel-bridge-xyz".into();
    let err = NodeNetwork::setup_in(node.ns(), cfg.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Config(ConfigError::NameTooLong { len: 17, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("kennel-bridge-xyz"), "{err}");

    // A pod CIDR overlapping a network already on the node.
    node.ip(&[
        "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    node.ip(&["addr", "add", "10.50.0.1/16", "dev", "other0"]);
    node.ip(&["link", "set", "other1", "up"]);
    node.ip(&["link", "set", "other0", "up"]);
    cfg.bridge = "kennel0".into();
    let err = NodeNetwork::setup_in(node.ns(), cfg.clone()).unwrap_err();
    assert!(matches!(err, NodeError::Overlap { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "pod CIDR 10.50.3.0/24 overlaps 10.50.0.0/16 on link other0"
    );

    // ... or a route to a network reached through a gateway.
    node.ip(&[
        "route",
        "add",
        "10.90.0.0/16",
        "via",
        "10.50.0.254",
        "dev",
        "other0",
        "onlink",
    ]);
    cfg.pod_cidr = "10.90.128.0/24".parse().unwrap();
    let err = NodeNetwork::setup_in(node.ns(), cfg.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod CIDR 10.90.128.0/24 overlaps 10.90.0.0/16 on link other0"
    );

    assert!(
        !state_dir.exists(),
        "nothing written to disk before the checks pass"
    );

    // A link with the bridge's name that is not a bridge is left alone.
    node.ip(&[
        "link", "add", "kennel0", "type", "veth", "peer", "name", "kennel0p",
    ]);
    cfg.pod_cidr = "10.60.0.0/24".parse().unwrap();
    let err = NodeNetwork::setup_in(node.ns(), cfg.clone()).unwrap_err();
    assert!(
        err.to_string()
            .contains("kennel0 exists but is a veth, not a bridge"),
        "{err}"
    );
    node.ip(&["link", "del", "kennel0"]);
    assert!(
        !state_dir.exists(),
        "nothing written to disk before the checks pass"
    );

    let mut expected = links_before.clone();
    expected.extend(["other1".to_string(), "other0".to_string()]);
    expected.sort();
    let mut now = node.link_names();
    now.sort();
    assert_eq!(now, expected, "no link half-made");
    assert!(
        !node.nft_ruleset().contains("kennel"),
        "no NAT table half-made"
    );

    // Exhausting a tiny range: /30 holds the gateway and one pod.
    cfg.pod_cidr = "10.70.0.0/30".parse().unwrap();
    let net = NodeNetwork::setup_in(node.ns(), cfg.clone()).unwrap();
    let only = net.attach("vm-1").unwrap();
    assert_eq!(only.ip, Ipv4Addr::new(10, 70, 0, 2));
    let err = net.attach("vm-2").unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Ipam(IpamError::Exhausted { capacity: 1, .. })
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "pod CIDR 10.70.0.0/30 is exhausted: all 1 addresses are allocated"
    );
    assert!(
        !node.has_link(&netns::config::tap_name("vm-2")),
        "no tap for the failed attach"
    );
    assert_eq!(net.ipam_state().unwrap().sandboxes.len(), 1);

    // The state on disk belongs to 10.70.0.0/30: another CIDR is refused.
    drop(net);
    cfg.pod_cidr = "10.71.0.0/24".parse().unwrap();
    let err = NodeNetwork::setup_in(node.ns(), cfg).unwrap_err();
    assert!(
        matches!(err, NodeError::Ipam(IpamError::ConfigMismatch { .. })),
        "{err}"
    );

    let state2 = tempfile::tempdir().unwrap();
    let cfg = config("10.80.0.0/24", &state2);
    let other = TestNs::new("bad2");
    // State on disk whose hostPorts clash makes nft refuse the table after
    // the bridge was made: setup fails and takes the bridge away again.
    let clash = tempfile::tempdir().unwrap();
    let hp = r#"[{"protocol":"tcp","host_port":8080,"container_port":80}]"#;
    std::fs::write(
        clash.path().join("ipam.json"),
        format!(
            r#"{{"cidr":"10.85.0.0/24","gateway":"10.85.0.1","sandboxes":{{
                "a":{{"ip":"10.85.0.2","link":"tap","host_ports":{hp}}},
                "b":{{"ip":"10.85.0.3","link":"tap","host_ports":{hp}}}}}}}"#
        ),
    )
    .unwrap();
    let before = other.link_names();
    let err = NodeNetwork::setup_in(other.ns(), config("10.85.0.0/24", &clash)).unwrap_err();
    assert!(matches!(err, NodeError::Nat(_)), "{err}");
    assert_eq!(other.link_names(), before, "bridge rolled back");
    assert!(!other.nft_ruleset().contains("kennel"));

    let net = NodeNetwork::setup_in(other.ns(), cfg).unwrap();
    // A pod namespace that does not exist: clear error, address released.
    let err = net
        .attach_veth("pod-x", &netns::NetNs::named("knt-no-such-namespace"))
        .unwrap_err();
    assert!(err.to_string().contains("knt-no-such-namespace"), "{err}");
    assert!(net.pod("pod-x").unwrap().is_none());
    assert!(!other.has_link(&netns::config::veth_name("pod-x")));

    // Empty sandbox ids are refused.
    assert!(matches!(
        net.attach("").unwrap_err(),
        NodeError::Config(ConfigError::EmptySandboxId)
    ));
}

#[test]
fn concurrent_attaches_get_distinct_addresses_and_sysctls_are_set_in_the_node_only() {
    let node = TestNs::new("conc");
    let state = tempfile::tempdir().unwrap();
    let net = NodeNetwork::setup_in(node.ns(), config("10.247.0.0/24", &state)).unwrap();
    let pods: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let net = &net;
                s.spawn(move || net.attach(&format!("vm-{i}")).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<_> = pods.iter().map(|p| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8);
    for p in &pods {
        assert!(node.has_link(p.tap_name().unwrap()));
    }
    assert_eq!(
        node.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(),
        "1"
    );
    assert_eq!(
        node.exec(&["sysctl", "-n", "net.ipv4.conf.kennel0.route_localnet"])
            .trim(),
        "1"
    );
    let report = net.reconcile::<&str>(&[]).unwrap();
    assert_eq!(report.released.len(), 8);
    assert!(net.ipam_state().unwrap().sandboxes.is_empty());
    assert!(!node.link_names().iter().any(|l| l.starts_with("ktap")));
}
