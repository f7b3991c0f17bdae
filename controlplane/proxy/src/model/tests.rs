use super::*;
use serde_json::json;

fn node() -> NodeInfo {
    NodeInfo {
        node_name: "n1".into(),
        node_ips: vec![Ipv4Addr::new(192, 0, 2, 10)],
        cluster_cidr: Some("10.1.0.0/16".parse().unwrap()),
    }
}

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(svc: &str, ports: serde_json::Value, eps: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                     "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4", "ports": ports, "endpoints": eps}))
    .unwrap()
}

#[test]
fn endpoint_selection_table() {
    // (conditions, local) -> counted for cluster traffic?
    let e = |ready: bool, serving: bool, terminating: bool, local: bool| Endpoint {
        ip: Ipv4Addr::new(10, 1, 0, 2),
        port: 80,
        local,
        ready,
        serving,
        terminating,
    };
    let sp = |eps: Vec<Endpoint>| ServicePort {
        key: PortKey {
            namespace: "d".into(),
            name: "s".into(),
            protocol: Protocol::Tcp,
            port: 80,
        },
        cluster_ips: vec![],
        node_port: None,
        external_ips: vec![],
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        endpoints: eps,
    };
    let mut other = e(true, true, false, false);
    other.ip = Ipv4Addr::new(10, 1, 0, 3);
    let cases: Vec<(Vec<Endpoint>, usize, usize)> = vec![
        (vec![e(true, true, false, true)], 1, 1),
        (vec![e(false, false, false, true)], 0, 0),
        // terminating but serving counts only when nothing is ready
        (vec![e(false, true, true, true)], 1, 1),
        (vec![e(false, true, true, true), other], 1, 1), // local falls back on its own
        (vec![other], 1, 0),
    ];
    for (eps, cluster, local) in cases {
        let p = sp(eps.clone());
        assert_eq!(p.cluster_endpoints().len(), cluster, "{eps:?}");
        assert_eq!(p.local_endpoints().len(), local, "{eps:?}");
    }
}

#[test]
fn services_and_slices_to_ports() {
    let services = [
        svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                     "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "s", "port": 9, "protocol": "SCTP"}]}})),
        svc(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}})),
        svc(
            json!({"metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        ),
    ];
    let slices = [slice(
        "web",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        json!([
            {"addresses": ["10.1.0.2"], "nodeName": "n1"},
            {"addresses": ["10.1.0.3"], "nodeName": "n2", "conditions": {"ready": false}},
        ]),
    )];
    let (m, errors) = build(&services, &slices, &node());
    assert!(errors.is_empty());
    assert_eq!(m.len(), 2, "{m:#?}"); // http and dns; SCTP, ExternalName, headless skipped
    let http = m.values().find(|p| p.key.port == 80).unwrap();
    assert_eq!(http.node_port, Some(30080));
    assert_eq!(http.external_ips, vec![Ipv4Addr::new(192, 0, 2, 10)]);
    assert_eq!(http.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert!(http.external_local && !http.internal_local);
    assert_eq!(http.endpoints.len(), 2);
    assert_eq!(http.cluster_endpoints().len(), 1);
    assert!(http.endpoints[0].local && http.endpoints[0].port == 8080);
    let dns = m.values().find(|p| p.key.port == 53).unwrap();
    assert!(dns.endpoints.is_empty());
    assert_eq!(dns.key.protocol, Protocol::Udp);
}

#[test]
fn bad_ports_are_reported_not_fatal() {
    let services = [svc(json!({"metadata": {"name": "a", "namespace": "x"},
        "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 70000}, {"port": 81}]}}))];
    let (m, errors) = build(&services, &[], &node());
    assert_eq!(m.len(), 1);
    assert_eq!(
        errors,
        vec![ModelError::BadPort {
            service: "x/a".into(),
            port: 70000
        }]
    );
}
