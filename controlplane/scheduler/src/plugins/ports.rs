//! NodePorts: host ports (protocol, IP, port) must be free on the node.

use crate::framework::{CycleState, FilterPlugin, NodeInfo, PodInfo, Status};

/// Reason of NodePorts.
pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// Whether every host port of `pod` is free on `node`.
pub fn ports_fit(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.host_ports
        .iter()
        .all(|want| !node.used_ports.iter().any(|u| u.conflicts(want)))
}

/// The NodePorts plugin.
pub struct NodePorts;

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if ports_fit(pod, node) {
            Status::ok()
        } else {
            Status::unschedulable(ERR_PORTS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn with_ports(name: &str, ports: Value) -> PodInfo {
        pod_meta(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "image": "i", "ports": ports}]}),
        )
    }

    #[test]
    fn conflicts() {
        let p = |port: i32, proto: &str, ip: &str| {
            let mut v = json!({"containerPort": 80, "hostPort": port, "protocol": proto});
            if !ip.is_empty() {
                v["hostIP"] = json!(ip);
            }
            v
        };
        let cases = [
            (vec![], vec![p(8080, "TCP", "")], true),
            (vec![p(8080, "TCP", "")], vec![p(8080, "TCP", "")], false),
            (vec![p(8080, "TCP", "")], vec![p(8080, "UDP", "")], true),
            (vec![p(8080, "TCP", "")], vec![p(8081, "TCP", "")], true),
            (
                vec![p(8080, "TCP", "127.0.0.1")],
                vec![p(8080, "TCP", "127.0.0.2")],
                true,
            ),
            (
                vec![p(8080, "TCP", "127.0.0.1")],
                vec![p(8080, "TCP", "127.0.0.1")],
                false,
            ),
            (
                vec![p(8080, "TCP", "0.0.0.0")],
                vec![p(8080, "TCP", "127.0.0.1")],
                false,
            ),
            (
                vec![p(8080, "TCP", "127.0.0.1")],
                vec![p(8080, "TCP", "")],
                false,
            ),
            (vec![p(8080, "SCTP", "")], vec![p(8080, "TCP", "")], true),
            (
                vec![json!({"containerPort": 8080})],
                vec![json!({"containerPort": 8080})],
                true,
            ),
        ];
        for (existing, want, fits) in cases {
            let mut n = plain("n");
            n.add_pod(Arc::new(with_ports("e", json!(existing))));
            let pod = with_ports("p", json!(want));
            let s = NodePorts.filter(&CycleState::default(), &pod, &n);
            assert_eq!(s.is_success(), fits, "{existing:?} vs {want:?}");
        }
        // Removing the pod frees its ports.
        let mut n = plain("n");
        n.add_pod(Arc::new(with_ports("e", json!([p(80, "TCP", "")]))));
        n.remove_pod("default/e");
        assert!(ports_fit(&with_ports("p", json!([p(80, "TCP", "")])), &n));
    }
}
