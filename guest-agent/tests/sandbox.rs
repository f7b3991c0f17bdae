//! CreateSandbox network setup (root): interfaces in the agent's own network namespace
//! (a veth pair the test creates there), found by name or by MAC, with address, MTU,
//! gateway and routes, checked with `ip`.

mod common;

use agent_proto::pb;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_by_name_and_mac() {
    let (agent, mut c) = TestAgent::start().await;
    agent.in_netns(&[
        "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    let link = agent.in_netns(&["ip", "-o", "link", "show", "v0"]);
    let v0_mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();
    c.create_sandbox(pb::CreateSandboxRequest {
        hostname: "net-pod".into(),
        interfaces: vec![
            pb::Interface {
                name: "v1".into(),
                mac: "02:00:00:00:00:42".into(),
                address: "10.77.0.1".into(),
                prefix_len: 24,
                ..Default::default()
            },
            pb::Interface {
                name: String::new(),
                mac: v0_mac.to_uppercase(),
                address: "10.77.0.2".into(),
                prefix_len: 24,
                mtu: 1400,
                gateway: "10.77.0.254".into(),
                routes: vec![pb::Route {
                    destination: "10.88.0.0".into(),
                    prefix_len: 16,
                    gateway: "10.77.0.3".into(),
                }],
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let addrs = agent.in_netns(&["ip", "-4", "-o", "addr"]);
    assert!(addrs.contains("v0    inet 10.77.0.2/24"), "{addrs}");
    assert!(addrs.contains("v1    inet 10.77.0.1/24"), "{addrs}");
    assert!(
        addrs.contains("lo    inet 127.0.0.1/8"),
        "loopback is up: {addrs}"
    );
    let v1 = agent.in_netns(&["ip", "-o", "link", "show", "v1"]);
    assert!(v1.contains("02:00:00:00:00:42"), "{v1}");
    let v0 = agent.in_netns(&["ip", "-o", "link", "show", "v0"]);
    assert!(v0.contains("mtu 1400") && v0.contains(",UP"), "{v0}");
    let routes = agent.in_netns(&["ip", "-4", "route"]);
    assert!(
        routes.contains("default via 10.77.0.254 dev v0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.88.0.0/16 via 10.77.0.3 dev v0"),
        "{routes}"
    );
    let get = agent.in_netns(&["ip", "-4", "route", "get", "10.88.1.1"]);
    assert!(get.contains("via 10.77.0.3 dev v0"), "{get}");

    let e = c
        .create_sandbox(pb::CreateSandboxRequest {
            interfaces: vec![pb::Interface {
                mac: "02:11:22:33:44:55".into(),
                address: "10.1.0.1".into(),
                prefix_len: 24,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .create_sandbox(pb::CreateSandboxRequest {
            interfaces: vec![pb::Interface {
                name: "v0".into(),
                address: "10.1.0.1".into(),
                prefix_len: 40,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("interfaces[0].prefix_len"), "{e:?}");
}
