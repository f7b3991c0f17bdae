use super::*;

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ContainerPort, PodDNSConfig, PodDNSConfigOption, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const MI: i64 = 1 << 20;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ctr(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(format!("registry.test/{name}:1")),
        ..Default::default()
    }
}

fn pod_named(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        status: None,
    }
}

fn pod(containers: Vec<Container>) -> Pod {
    pod_named("web", containers)
}

fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    })
}

fn res(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
    Container {
        resources: Some(ResourceRequirements {
            requests: quantities(requests),
            limits: quantities(limits),
            ..Default::default()
        }),
        ..ctr(name)
    }
}

// ---------------------------------------------------------------------------------------------
// resolv.conf
// ---------------------------------------------------------------------------------------------

#[test]
fn resolv_conf_parses_as_upstream() {
    // Upstream TestParseResolvConf. Its error cases (a `nameserver` line without an address)
    // are skipped lines here: the host file is best effort.
    // (text, nameservers, searches, options)
    type Row<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let none: &[&str] = &[];
    let cases: &[Row] = &[
        ("", none, none, none),
        (" ", none, none, none),
        ("\n", none, none, none),
        ("\t\n\t", none, none, none),
        ("#comment\n", none, none, none),
        (" #comment\n", none, none, none),
        ("#comment\n#comment", none, none, none),
        ("#comment\nnameserver", none, none, none),
        ("#comment\nnameserver\nsearch", none, none, none),
        ("#comment\nnameserver 1.2.3.4\nsearch", &["1.2.3.4"], none, none),
        ("nameserver 1.2.3.4", &["1.2.3.4"], none, none),
        (" nameserver 1.2.3.4", &["1.2.3.4"], none, none),
        ("\tnameserver 1.2.3.4", &["1.2.3.4"], none, none),
        ("nameserver\t1.2.3.4", &["1.2.3.4"], none, none),
        ("nameserver \t 1.2.3.4", &["1.2.3.4"], none, none),
        (
            "nameserver 1.2.3.4\nnameserver 5.6.7.8",
            &["1.2.3.4", "5.6.7.8"],
            none,
            none,
        ),
        ("nameserver 1.2.3.4 #comment", &["1.2.3.4"], none, none),
        ("search ", none, none, none),
        ("search foo", none, &["foo"], none),
        ("search foo bar", none, &["foo", "bar"], none),
        ("search foo. bar", none, &["foo", "bar"], none),
        ("search foo bar bat\n", none, &["foo", "bar", "bat"], none),
        ("search foo\nsearch bar", none, &["bar"], none),
        (
            "nameserver 1.2.3.4\nsearch foo bar",
            &["1.2.3.4"],
            &["foo", "bar"],
            none,
        ),
        (
            "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar",
            &["1.2.3.4", "5.6.7.8"],
            &["bar"],
            none,
        ),
        (
            "#comment\nnameserver 1.2.3.4\n#comment\nsearch foo\ncomment",
            &["1.2.3.4"],
            &["foo"],
            none,
        ),
        ("options ", none, none, none),
        (
            "options ndots:5 attempts:2",
            none,
            none,
            &["ndots:5", "attempts:2"],
        ),
        (
            "options ndots:1\noptions ndots:5 attempts:3",
            none,
            none,
            &["ndots:5", "attempts:3"],
        ),
        (
            "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar\noptions ndots:5 attempts:4",
            &["1.2.3.4", "5.6.7.8"],
            &["bar"],
            &["ndots:5", "attempts:4"],
        ),
        // kubelet reads only `search`; the obsolete `domain` keyword is not a search list.
        ("domain corp.example", none, none, none),
    ];
    for &(text, servers, searches, options) in cases {
        let got = ResolvConf::parse(text);
        let want = ResolvConf {
            servers: strings(servers),
            searches: strings(searches),
            options: strings(options),
        };
        assert_eq!(got, want, "{text:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// DNS config
// ---------------------------------------------------------------------------------------------

const CLUSTER_NS: &str = "10.0.0.10";

fn host_resolv() -> ResolvConf {
    ResolvConf {
        servers: strings(&["8.8.8.8"]),
        searches: strings(&["host.domain"]),
        options: strings(&["timeout:2"]),
    }
}

fn ctx() -> SandboxContext {
    SandboxContext {
        cluster_dns: strings(&[CLUSTER_NS]),
        cluster_domain: "kubernetes.io".into(),
        host_resolv: host_resolv(),
        logs_root: PathBuf::from("/var/log/pods"),
    }
}

fn opt(name: &str, value: Option<&str>) -> PodDNSConfigOption {
    PodDNSConfigOption {
        name: Some(name.into()),
        value: value.map(str::to_string),
    }
}

fn dns_pod(policy: Option<&str>, config: Option<PodDNSConfig>) -> Pod {
    let mut p = pod(vec![ctr("a")]);
    let spec = p.spec.as_mut().unwrap();
    spec.dns_policy = policy.map(str::to_string);
    spec.dns_config = config;
    p
}

fn custom() -> PodDNSConfig {
    PodDNSConfig {
        nameservers: Some(strings(&["10.0.0.11"])),
        searches: Some(strings(&["my.domain"])),
        options: Some(vec![opt("ndots", Some("3")), opt("debug", None)]),
    }
}

#[test]
fn dns_config_per_policy() {
    // Upstream TestGetPodDNSType, TestGetPodDNSCustom, TestFormDNSSearchFitsLimits,
    // TestFormDNSNameserversFitsLimits and TestMergeDNSOptions, applied to kennel's inputs.
    struct Case {
        name: &'static str,
        policy: Option<&'static str>,
        config: Option<PodDNSConfig>,
        ctx: SandboxContext,
        servers: Vec<String>,
        searches: Vec<String>,
        options: Vec<String>,
        fallback: bool,
    }
    let cluster_search = |extra: &[&str]| {
        let mut v = strings(&["ns.svc.kubernetes.io", "svc.kubernetes.io", "kubernetes.io"]);
        v.extend(strings(extra));
        v
    };
    let no_cluster_dns = SandboxContext {
        cluster_dns: vec![],
        ..ctx()
    };
    let no_domain = SandboxContext {
        cluster_domain: String::new(),
        ..ctx()
    };
    let host_has_cluster_domain = SandboxContext {
        host_resolv: ResolvConf {
            searches: strings(&["kubernetes.io", "host.domain", "host.domain"]),
            ..host_resolv()
        },
        ..ctx()
    };
    let many = |n: usize| (1..=n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    // 2048 characters with the separating spaces: 128 + 15 × 127 + 15.
    // (Distinct paths: repeats would be merged first.)
    let mut long_list = vec!["A".repeat(128)];
    long_list.extend((0..15).map(|i| format!("{i:02}{}", "A".repeat(125))));
    let searches_only = |searches: Vec<String>| PodDNSConfig {
        searches: Some(searches),
        ..Default::default()
    };
    let cases = vec![
        Case {
            name: "no policy means ClusterFirst",
            policy: None,
            config: None,
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS]),
            searches: cluster_search(&["host.domain"]),
            options: strings(&["ndots:5"]),
            fallback: false,
        },
        Case {
            name: "ClusterFirst",
            policy: Some("ClusterFirst"),
            config: None,
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS]),
            searches: cluster_search(&["host.domain"]),
            options: strings(&["ndots:5"]),
            fallback: false,
        },
        Case {
            name: "ClusterFirstWithHostNet",
            policy: Some("ClusterFirstWithHostNet"),
            config: None,
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS]),
            searches: cluster_search(&["host.domain"]),
            options: strings(&["ndots:5"]),
            fallback: false,
        },
        Case {
            name: "Default is the host's resolv.conf",
            policy: Some("Default"),
            config: None,
            ctx: ctx(),
            servers: strings(&["8.8.8.8"]),
            searches: strings(&["host.domain"]),
            options: strings(&["timeout:2"]),
            fallback: false,
        },
        Case {
            name: "None without dnsConfig is empty",
            policy: Some("None"),
            config: None,
            ctx: ctx(),
            servers: vec![],
            searches: vec![],
            options: vec![],
            fallback: false,
        },
        Case {
            name: "None with dnsConfig",
            policy: Some("None"),
            config: Some(PodDNSConfig {
                nameservers: Some(strings(&["203.0.113.1"])),
                searches: Some(strings(&["my.domain", "second.domain"])),
                options: Some(vec![opt("ndots", Some("3")), opt("debug", None)]),
            }),
            ctx: ctx(),
            servers: strings(&["203.0.113.1"]),
            searches: strings(&["my.domain", "second.domain"]),
            options: strings(&["ndots:3", "debug"]),
            fallback: false,
        },
        Case {
            name: "ClusterFirst with dnsConfig",
            policy: Some("ClusterFirst"),
            config: Some(custom()),
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS, "10.0.0.11"]),
            searches: cluster_search(&["host.domain", "my.domain"]),
            options: strings(&["ndots:3", "debug"]),
            fallback: false,
        },
        Case {
            name: "ClusterFirstWithHostNet with dnsConfig",
            policy: Some("ClusterFirstWithHostNet"),
            config: Some(custom()),
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS, "10.0.0.11"]),
            searches: cluster_search(&["host.domain", "my.domain"]),
            options: strings(&["ndots:3", "debug"]),
            fallback: false,
        },
        Case {
            name: "Default with dnsConfig",
            policy: Some("Default"),
            config: Some(custom()),
            ctx: ctx(),
            servers: strings(&["8.8.8.8", "10.0.0.11"]),
            searches: strings(&["host.domain", "my.domain"]),
            options: strings(&["timeout:2", "ndots:3", "debug"]),
            fallback: false,
        },
        Case {
            name: "ClusterFirst without cluster DNS falls back to Default",
            policy: Some("ClusterFirst"),
            config: None,
            ctx: no_cluster_dns.clone(),
            servers: strings(&["8.8.8.8"]),
            searches: strings(&["host.domain"]),
            options: strings(&["timeout:2"]),
            fallback: true,
        },
        Case {
            name: "ClusterFirstWithHostNet without cluster DNS falls back too",
            policy: Some("ClusterFirstWithHostNet"),
            config: None,
            ctx: no_cluster_dns.clone(),
            servers: strings(&["8.8.8.8"]),
            searches: strings(&["host.domain"]),
            options: strings(&["timeout:2"]),
            fallback: true,
        },
        Case {
            name: "the fallback still merges dnsConfig",
            policy: None,
            config: Some(custom()),
            ctx: no_cluster_dns.clone(),
            servers: strings(&["8.8.8.8", "10.0.0.11"]),
            searches: strings(&["host.domain", "my.domain"]),
            options: strings(&["timeout:2", "ndots:3", "debug"]),
            fallback: true,
        },
        Case {
            name: "Default without cluster DNS is no fallback",
            policy: Some("Default"),
            config: None,
            ctx: no_cluster_dns,
            servers: strings(&["8.8.8.8"]),
            searches: strings(&["host.domain"]),
            options: strings(&["timeout:2"]),
            fallback: false,
        },
        Case {
            name: "ClusterFirst without a cluster domain searches the host's list only",
            policy: Some("ClusterFirst"),
            config: None,
            ctx: no_domain,
            servers: strings(&[CLUSTER_NS]),
            searches: strings(&["host.domain"]),
            options: strings(&["ndots:5"]),
            fallback: false,
        },
        Case {
            name: "duplicate search domains are omitted",
            policy: Some("ClusterFirst"),
            config: None,
            ctx: host_has_cluster_domain,
            servers: strings(&[CLUSTER_NS]),
            searches: cluster_search(&["host.domain"]),
            options: strings(&["ndots:5"]),
            fallback: false,
        },
        Case {
            name: "dnsConfig entries already present are merged",
            policy: Some("ClusterFirst"),
            config: Some(PodDNSConfig {
                nameservers: Some(strings(&[CLUSTER_NS, "10.0.0.11"])),
                searches: Some(strings(&["svc.kubernetes.io", "my.domain"])),
                options: Some(vec![opt("ndots", Some("2"))]),
            }),
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS, "10.0.0.11"]),
            searches: cluster_search(&["host.domain", "my.domain"]),
            options: strings(&["ndots:2"]),
            fallback: false,
        },
        Case {
            name: "dnsConfig options replace the host's",
            policy: Some("Default"),
            config: Some(PodDNSConfig {
                options: Some(vec![opt("timeout", Some("5")), opt("rotate", Some(""))]),
                ..Default::default()
            }),
            ctx: ctx(),
            servers: strings(&["8.8.8.8"]),
            searches: strings(&["host.domain"]),
            options: strings(&["timeout:5", "rotate"]),
            fallback: false,
        },
        Case {
            name: "at most 3 nameservers",
            policy: Some("ClusterFirst"),
            config: Some(PodDNSConfig {
                nameservers: Some(strings(&["1.1.1.1", "2.2.2.2", "3.3.3.3"])),
                ..Default::default()
            }),
            ctx: ctx(),
            servers: strings(&[CLUSTER_NS, "1.1.1.1", "2.2.2.2"]),
            searches: cluster_search(&["host.domain"]),
            options: strings(&["ndots:5"]),
            fallback: false,
        },
        Case {
            name: "32 search paths fit",
            policy: Some("None"),
            config: Some(searches_only(many(32))),
            ctx: ctx(),
            servers: vec![],
            searches: many(32),
            options: vec![],
            fallback: false,
        },
        Case {
            name: "the 33rd search path is omitted",
            policy: Some("None"),
            config: Some(searches_only(many(33))),
            ctx: ctx(),
            servers: vec![],
            searches: many(32),
            options: vec![],
            fallback: false,
        },
        Case {
            name: "a search path longer than 253 characters is omitted",
            policy: Some("None"),
            config: Some(searches_only(vec![
                "AAA".into(),
                "B".repeat(256),
                "BBB".into(),
            ])),
            ctx: ctx(),
            servers: vec![],
            searches: strings(&["AAA", "BBB"]),
            options: vec![],
            fallback: false,
        },
        Case {
            name: "a 2048-character search line fits",
            policy: Some("None"),
            config: Some(searches_only(long_list.clone())),
            ctx: ctx(),
            servers: vec![],
            searches: long_list.clone(),
            options: vec![],
            fallback: false,
        },
        Case {
            name: "a search line over 2048 characters loses its last paths",
            policy: Some("None"),
            config: Some(searches_only({
                let mut v = long_list.clone();
                v.push("B".into());
                v
            })),
            ctx: ctx(),
            servers: vec![],
            searches: long_list,
            options: vec![],
            fallback: false,
        },
    ];
    for c in cases {
        let p = dns_pod(c.policy, c.config);
        let (got, fallback) = dns_config(&p, &c.ctx);
        assert_eq!(got.servers, c.servers, "{}: servers", c.name);
        assert_eq!(got.searches, c.searches, "{}: searches", c.name);
        // Upstream merges options through a map: their order is not part of the contract.
        let mut options = got.options.clone();
        options.sort();
        let mut want = c.options.clone();
        want.sort();
        assert_eq!(options, want, "{}: options", c.name);
        assert_eq!(fallback, c.fallback, "{}: fallback", c.name);
    }
}

// ---------------------------------------------------------------------------------------------
// hostname, ports, log paths, labels
// ---------------------------------------------------------------------------------------------

#[test]
fn hostname_is_spec_hostname_or_pod_name() {
    let long = "a".repeat(70);
    let dash_at_cut = format!("{}-{}", "b".repeat(62), "c".repeat(5));
    let dot_at_cut = format!("{}.-{}", "d".repeat(61), "e".repeat(5));
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        ("web", None, "web".into()),
        ("web-0", Some("db-0"), "db-0".into()),
        ("web-0", Some(""), "web-0".into()),
        (&long, None, "a".repeat(63)),
        ("web", Some(&long), "a".repeat(63)),
        (&dash_at_cut, None, "b".repeat(62)),
        (&dot_at_cut, None, "d".repeat(61)),
    ];
    for (name, hostname_field, want) in cases {
        let mut p = pod_named(name, vec![ctr("a")]);
        p.spec.as_mut().unwrap().hostname = hostname_field.map(str::to_string);
        assert_eq!(hostname(&p), want, "{name:?} / {hostname_field:?}");
    }
}

fn port(
    container_port: i32,
    host_port: Option<i32>,
    proto: Option<&str>,
    ip: &str,
) -> ContainerPort {
    ContainerPort {
        container_port,
        host_port,
        protocol: proto.map(str::to_string),
        host_ip: (!ip.is_empty()).then(|| ip.to_string()),
        ..Default::default()
    }
}

fn mapping(
    proto: cri::Protocol,
    container_port: i32,
    host_port: i32,
    ip: &str,
) -> cri::PortMapping {
    cri::PortMapping {
        protocol: proto as i32,
        container_port,
        host_port,
        host_ip: ip.into(),
    }
}

#[test]
fn port_mappings_are_the_host_ports() {
    let with_ports = |name: &str, ports: Vec<ContainerPort>| Container {
        ports: Some(ports),
        ..ctr(name)
    };
    let cases: Vec<(&str, Vec<Container>, Vec<cri::PortMapping>)> = vec![
        ("no ports", vec![ctr("a")], vec![]),
        (
            "container ports without host ports",
            vec![with_ports(
                "a",
                vec![port(80, None, None, ""), port(81, Some(0), Some("UDP"), "")],
            )],
            vec![],
        ),
        (
            "protocols default to TCP",
            vec![with_ports(
                "a",
                vec![
                    port(80, Some(8080), None, ""),
                    port(53, Some(5353), Some("UDP"), "127.0.0.1"),
                    port(9, Some(9009), Some("SCTP"), ""),
                    port(443, Some(8443), Some("TCP"), "::1"),
                ],
            )],
            vec![
                mapping(cri::Protocol::Tcp, 80, 8080, ""),
                mapping(cri::Protocol::Udp, 53, 5353, "127.0.0.1"),
                mapping(cri::Protocol::Sctp, 9, 9009, ""),
                mapping(cri::Protocol::Tcp, 443, 8443, "::1"),
            ],
        ),
        (
            "every container, in order",
            vec![
                with_ports("a", vec![port(80, Some(8080), None, "")]),
                with_ports("b", vec![port(90, Some(9090), None, "")]),
            ],
            vec![
                mapping(cri::Protocol::Tcp, 80, 8080, ""),
                mapping(cri::Protocol::Tcp, 90, 9090, ""),
            ],
        ),
    ];
    for (name, containers, want) in cases {
        assert_eq!(port_mappings(&pod(containers)), want, "{name}");
    }
}

#[test]
fn log_dir_is_namespace_name_uid() {
    let p = pod(vec![ctr("a")]);
    assert_eq!(
        log_dir(Path::new("/var/log/pods"), &p),
        PathBuf::from("/var/log/pods/ns_web_uid-1")
    );
}

#[test]
fn pod_labels_identify_the_pod() {
    let got = pod_labels(&pod(vec![ctr("a")]));
    let want = HashMap::from([
        (labels::POD_NAME.to_string(), "web".to_string()),
        (labels::POD_NAMESPACE.to_string(), "ns".to_string()),
        (labels::POD_UID.to_string(), "uid-1".to_string()),
    ]);
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------
// Quantities and resources
// ---------------------------------------------------------------------------------------------

#[test]
fn quantities_in_bytes_and_millis() {
    let cases: &[(&str, i64, i64)] = &[
        ("0", 0, 0),
        ("1", 1, 1000),
        ("100m", 1, 100),
        ("1500m", 2, 1500),
        ("0.5", 1, 500),
        ("1k", 1000, 1_000_000),
        ("1Ki", 1024, 1_024_000),
        ("128Mi", 128 * MI, 128 * MI * 1000),
        ("1G", 1_000_000_000, 1_000_000_000_000),
        ("1e3", 1000, 1_000_000),
        ("not-a-quantity", 0, 0),
    ];
    for &(q, bytes, millis) in cases {
        let q = Quantity(q.into());
        assert_eq!(quantity_bytes(&q), bytes, "{q:?} bytes");
        assert_eq!(quantity_millis(&q), millis, "{q:?} millis");
    }
}

#[test]
fn container_resources_as_kubelet_maps_them() {
    // (requests, limits, cpu shares, cpu quota, cpu period, memory limit). Upstream's mapping,
    // but for one deliberate difference: no cpu request (nor limit) leaves the shares unset
    // (0, the runtime's default weight) instead of the minimum 2; see `resources`.
    type Row = (
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        i64,
        i64,
        i64,
        i64,
    );
    let cases: &[(&str, Row)] = &[
        ("nothing set", (&[], &[], 0, 0, 0, 0)),
        ("cpu request", (&[("cpu", "100m")], &[], 102, 0, 0, 0)),
        ("one cpu", (&[("cpu", "1")], &[], 1024, 0, 0, 0)),
        ("tiny cpu request", (&[("cpu", "1m")], &[], 2, 0, 0, 0)),
        ("fractional cpu", (&[("cpu", "0.5")], &[], 512, 0, 0, 0)),
        (
            "cpu limit only: shares from the limit",
            (&[], &[("cpu", "500m")], 512, 50_000, 100_000, 0),
        ),
        (
            "cpu request and limit",
            (
                &[("cpu", "250m")],
                &[("cpu", "2")],
                256,
                200_000,
                100_000,
                0,
            ),
        ),
        (
            "explicit zero request",
            (&[("cpu", "0")], &[("cpu", "1")], 2, 100_000, 100_000, 0),
        ),
        (
            "tiny limit: quota at least 1ms",
            (&[], &[("cpu", "1m")], 2, 1000, 100_000, 0),
        ),
        ("10m limit", (&[], &[("cpu", "10m")], 10, 1000, 100_000, 0)),
        (
            "shares are capped",
            (&[("cpu", "1000")], &[], 262_144, 0, 0, 0),
        ),
        (
            "memory limit",
            (&[], &[("memory", "128Mi")], 0, 0, 0, 128 * MI),
        ),
        (
            "memory request only",
            (&[("memory", "128Mi")], &[], 0, 0, 0, 0),
        ),
        (
            "decimal memory",
            (&[], &[("memory", "1G")], 0, 0, 0, 1_000_000_000),
        ),
        (
            "everything",
            (
                &[("cpu", "100m"), ("memory", "64Mi")],
                &[("cpu", "200m"), ("memory", "128Mi")],
                102,
                20_000,
                100_000,
                128 * MI,
            ),
        ),
    ];
    for &(name, (requests, limits, shares, quota, period, memory)) in cases {
        let got = resources(&res("a", requests, limits));
        assert_eq!(got.cpu_shares, shares, "{name}: shares");
        assert_eq!(got.cpu_quota, quota, "{name}: quota");
        assert_eq!(got.cpu_period, period, "{name}: period");
        assert_eq!(got.memory_limit_in_bytes, memory, "{name}: memory");
    }
}

// ---------------------------------------------------------------------------------------------
// Sandbox and container configs
// ---------------------------------------------------------------------------------------------

#[test]
fn sandbox_config_describes_the_pod() {
    let mut p = pod(vec![Container {
        ports: Some(vec![port(80, Some(8080), None, "")]),
        ..ctr("a")
    }]);
    p.metadata.labels = Some(BTreeMap::from([
        ("app".to_string(), "web".to_string()),
        (labels::POD_NAME.to_string(), "spoofed".to_string()),
    ]));
    p.metadata.annotations = Some(BTreeMap::from([("note".to_string(), "x".to_string())]));
    let cfg = sandbox_config(&p, &ctx(), 2);
    assert_eq!(
        cfg.metadata,
        Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "ns".into(),
            attempt: 2,
        })
    );
    assert_eq!(cfg.hostname, "web");
    assert_eq!(cfg.log_directory, "/var/log/pods/ns_web_uid-1");
    assert_eq!(cfg.dns_config, Some(dns_config(&p, &ctx()).0));
    assert_eq!(cfg.port_mappings, port_mappings(&p));
    let want_labels = HashMap::from([
        ("app".to_string(), "web".to_string()),
        (labels::POD_NAME.to_string(), "web".to_string()),
        (labels::POD_NAMESPACE.to_string(), "ns".to_string()),
        (labels::POD_UID.to_string(), "uid-1".to_string()),
    ]);
    assert_eq!(cfg.labels, want_labels, "kubelet's labels win");
    assert_eq!(
        cfg.annotations,
        HashMap::from([("note".to_string(), "x".to_string())])
    );
}

#[test]
fn sandbox_memory_is_the_pod_limit_without_overhead() {
    // Upstream calculateSandboxResources excludes spec.overhead, which goes in its own field;
    // the runtime adds the two.
    // (name, containers, spec.overhead memory, resources memory, overhead memory)
    type Row = (
        &'static str,
        Vec<Container>,
        Option<&'static str>,
        Option<i64>,
        Option<i64>,
    );
    let cases: Vec<Row> = vec![
        ("unbounded", vec![ctr("a")], None, None, None),
        (
            "one container unbounded",
            vec![res("a", &[], &[("memory", "128Mi")]), ctr("b")],
            None,
            None,
            None,
        ),
        (
            "sum of limits",
            vec![
                res("a", &[], &[("memory", "128Mi")]),
                res("b", &[], &[("memory", "64Mi")]),
            ],
            None,
            Some(192 * MI),
            None,
        ),
        (
            "overhead apart",
            vec![res("a", &[], &[("memory", "128Mi")])],
            Some("32Mi"),
            Some(128 * MI),
            Some(32 * MI),
        ),
        (
            "overhead of an unbounded pod",
            vec![ctr("a")],
            Some("32Mi"),
            None,
            Some(32 * MI),
        ),
    ];
    for (name, containers, overhead, memory, overhead_bytes) in cases {
        let mut p = pod(containers);
        p.spec.as_mut().unwrap().overhead =
            overhead.map(|o| BTreeMap::from([("memory".to_string(), Quantity(o.to_string()))]));
        let linux = sandbox_config(&p, &ctx(), 0).linux.unwrap();
        assert_eq!(
            linux.resources.map(|r| r.memory_limit_in_bytes),
            memory,
            "{name}: resources"
        );
        assert_eq!(
            linux.overhead.map(|r| r.memory_limit_in_bytes),
            overhead_bytes,
            "{name}: overhead"
        );
    }
}

#[test]
fn container_config_for_each_attempt() {
    let c = Container {
        command: Some(strings(&["/bin/$(CMD)", "$$(CMD)"])),
        args: Some(strings(&["--greeting=$(GREETING)", "$(MISSING)", "plain"])),
        working_dir: Some("/srv".into()),
        tty: Some(true),
        ..res("app", &[("cpu", "100m")], &[("memory", "64Mi")])
    };
    let p = pod(vec![c.clone()]);
    let env = vec![
        ("CMD".to_string(), "server".to_string()),
        ("GREETING".to_string(), "hello world".to_string()),
    ];
    let cases: &[(&str, u32)] = &[("app", 0), ("init", 3)];
    for &(kind, attempt) in cases {
        let cfg = container_config(&p, &c, kind, attempt, env.clone());
        assert_eq!(
            cfg.metadata,
            Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt,
            })
        );
        assert_eq!(cfg.log_path, format!("app/{attempt}.log"), "{kind}");
        assert_eq!(
            cfg.image.as_ref().map(|i| i.image.as_str()),
            Some("registry.test/app:1")
        );
        assert_eq!(cfg.command, strings(&["/bin/server", "$(CMD)"]));
        assert_eq!(
            cfg.args,
            strings(&["--greeting=hello world", "$(MISSING)", "plain"])
        );
        assert_eq!(cfg.working_dir, "/srv");
        assert!(cfg.tty && !cfg.stdin && !cfg.stdin_once);
        let envs: Vec<(String, String)> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert_eq!(envs, env, "environment in order");
        let want_labels = HashMap::from([
            (labels::POD_NAME.to_string(), "web".to_string()),
            (labels::POD_NAMESPACE.to_string(), "ns".to_string()),
            (labels::POD_UID.to_string(), "uid-1".to_string()),
            (labels::CONTAINER_NAME.to_string(), "app".to_string()),
            (labels::CONTAINER_KIND.to_string(), kind.to_string()),
        ]);
        assert_eq!(cfg.labels, want_labels, "{kind}");
        assert_eq!(
            cfg.annotations
                .get("io.kubernetes.container.restartCount")
                .map(String::as_str),
            Some(attempt.to_string().as_str())
        );
        assert_eq!(
            cfg.annotations
                .get("io.kubernetes.container.terminationMessagePath")
                .map(String::as_str),
            Some("/dev/termination-log")
        );
        let linux = cfg.linux.unwrap().resources.unwrap();
        assert_eq!(linux, resources(&c));
        assert_eq!(
            (linux.cpu_shares, linux.memory_limit_in_bytes),
            (102, 64 * MI)
        );
    }
    // A custom termination message path is passed on.
    let custom = Container {
        termination_message_path: Some("/tmp/done".into()),
        ..ctr("b")
    };
    let cfg = container_config(&p, &custom, "app", 0, vec![]);
    assert_eq!(
        cfg.annotations
            .get("io.kubernetes.container.terminationMessagePath")
            .map(String::as_str),
        Some("/tmp/done")
    );
    assert!(cfg.command.is_empty() && cfg.args.is_empty());
}
