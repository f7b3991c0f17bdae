//! A route for the service range onto the pod bridge. Connections from the node itself to a
//! ClusterIP must pass the routing lookup before kennel-proxy's output DNAT rewrites them; on a
//! node without a default route (a test's network namespace, an isolated host) the kernel would
//! refuse them as unreachable. kube-proxy's IPVS mode uses a dummy device for this; the bridge
//! serves here (the `dummy` driver may be missing) and keeps stray ClusterIP traffic on the node.
//! The route goes with the bridge, so it is re-applied while `kennel up` runs.

use std::time::Duration;

/// Keeps `ip route replace <cidr> dev <bridge>` in place until the future is dropped.
pub async fn run(cidr: ipnet::Ipv4Net, bridge: String) -> Result<(), String> {
    let mut installed = false;
    loop {
        let out = tokio::process::Command::new("ip")
            .args(["route", "replace", &cidr.to_string(), "dev", &bridge])
            .output()
            .await
            .map_err(|e| format!("running ip: {e}"))?;
        match (out.status.success(), installed) {
            (true, false) => tracing::info!("service range {cidr} routed onto {bridge}"),
            // The bridge appears once kennel-cri has set up the node network.
            (false, _) => tracing::debug!(
                "route {cidr} dev {bridge}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            _ => {}
        }
        installed = out.status.success();
        tokio::time::sleep(Duration::from_secs(if installed { 10 } else { 1 })).await;
    }
}
