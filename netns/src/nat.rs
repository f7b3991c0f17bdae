//! NAT with nftables: masquerade for pod egress and hostPort DNAT, kept in
//! one table per bridge. Rules are applied with Debian's `nft` run inside the
//! node's namespace; every change is one atomic `nft -f` transaction.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// nftables failures.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The `nft` binary could not be started (package `nftables` missing?).
    #[error("run nft (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    /// `nft` rejected the transaction.
    #[error("nft failed: {stderr}")]
    Rejected {
        /// nft's error output.
        stderr: String,
    },
    /// A mapping asks for port 0.
    #[error("host port mapping {0} uses port 0")]
    PortZero(HostPortMapping),
}

/// Transport protocol of a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A hostPort: traffic to any local address of the node (including
/// 127.0.0.1) on `host_port` goes to the pod's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPortMapping {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Port on the node.
    pub host_port: u16,
    /// Port in the pod.
    pub container_port: u16,
}

impl HostPortMapping {
    /// A TCP mapping.
    pub fn tcp(host_port: u16, container_port: u16) -> Self {
        HostPortMapping {
            protocol: Protocol::Tcp,
            host_port,
            container_port,
        }
    }

    /// A UDP mapping.
    pub fn udp(host_port: u16, container_port: u16) -> Self {
        HostPortMapping {
            protocol: Protocol::Udp,
            host_port,
            container_port,
        }
    }

    /// Rejects port 0.
    pub fn validate(&self) -> Result<(), NatError> {
        if self.host_port == 0 || self.container_port == 0 {
            return Err(NatError::PortZero(*self));
        }
        Ok(())
    }
}

impl fmt::Display for HostPortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}->{}",
            self.protocol, self.host_port, self.container_port
        )
    }
}

/// Name of the nftables table for a bridge (`kennel_` + the bridge name with
/// characters nft identifiers cannot hold replaced by `_`).
pub fn table_name(bridge: &str) -> String {
    let clean: String = bridge
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("kennel_{clean}")
}

/// Name of the hostPort map inside the table.
pub const HOSTPORT_MAP: &str = "hostports";

fn element(m: &HostPortMapping, ip: Ipv4Addr) -> String {
    format!(
        "{} . {} : {} . {}",
        m.protocol, m.host_port, ip, m.container_port
    )
}

/// The whole table, replacing any previous version of it atomically.
pub fn table_script(
    table: &str,
    cidr: Ipv4Net,
    masquerade: bool,
    mappings: &[(HostPortMapping, Ipv4Addr)],
) -> String {
    let mut s = String::new();
    // `add` then `delete` makes the delete succeed whether or not it existed.
    s.push_str(&format!("add table ip {table}\ndelete table ip {table}\n"));
    s.push_str(&format!("table ip {table} {{\n"));
    s.push_str(&format!(
        "  map {HOSTPORT_MAP} {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n"
    ));
    let dnat =
        format!("fib daddr type local dnat ip to meta l4proto . th dport map @{HOSTPORT_MAP}");
    s.push_str(&format!(
        "  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n    {dnat};\n  }}\n"
    ));
    s.push_str(&format!(
        "  chain output {{ type nat hook output priority -100; policy accept;\n    {dnat};\n  }}\n"
    ));
    s.push_str("  chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n");
    // hostPort via 127.0.0.1: the source must be rewritten so the pod can answer.
    s.push_str(&format!(
        "    ip saddr 127.0.0.0/8 ip daddr {cidr} masquerade;\n"
    ));
    // A pod reaching another pod through a hostPort: answer through the node.
    s.push_str(&format!(
        "    ct status dnat ip saddr {cidr} ip daddr {cidr} masquerade;\n"
    ));
    if masquerade {
        s.push_str(&format!(
            "    ip saddr {cidr} ip daddr != {cidr} masquerade;\n"
        ));
    }
    s.push_str("  }\n}\n");
    if !mappings.is_empty() {
        s.push_str(&elements_script("add", table, mappings));
    }
    s
}

fn elements_script(verb: &str, table: &str, mappings: &[(HostPortMapping, Ipv4Addr)]) -> String {
    let elems: Vec<String> = mappings.iter().map(|(m, ip)| element(m, *ip)).collect();
    format!(
        "{verb} element ip {table} {HOSTPORT_MAP} {{ {} }}\n",
        elems.join(", ")
    )
}

/// Adds mappings (idempotent: adding an existing element is not an error).
pub fn add_mappings_script(table: &str, mappings: &[(HostPortMapping, Ipv4Addr)]) -> String {
    if mappings.is_empty() {
        return String::new();
    }
    elements_script("add", table, mappings)
}

/// Removes mappings whether or not they are present.
pub fn remove_mappings_script(table: &str, mappings: &[(HostPortMapping, Ipv4Addr)]) -> String {
    if mappings.is_empty() {
        return String::new();
    }
    // Adding first makes the delete succeed when an element is already gone.
    let mut s = elements_script("add", table, mappings);
    s.push_str(&elements_script("delete", table, mappings));
    s
}

/// Deletes the table whether or not it exists.
pub fn delete_table_script(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// Applies an nft script as one transaction in the calling thread's
/// network namespace. An empty script does nothing.
pub fn apply(script: &str) -> Result<(), NatError> {
    if script.is_empty() {
        return Ok(());
    }
    tracing::debug!(script, "nft -f -");
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NatError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NatError::Spawn)?;
    if !out.status.success() {
        return Err(NatError::Rejected {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Lists the table (`nft list table`), or `None` if it does not exist, in
/// the calling thread's namespace.
pub fn list_table(table: &str) -> Result<Option<String>, NatError> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .map_err(NatError::Spawn)?;
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(table_name("kennel0"), "kennel_kennel0");
        assert_eq!(table_name("br-x.1"), "kennel_br_x_1");
    }

    #[test]
    fn script_shape() {
        let cidr: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let ip = Ipv4Addr::new(10, 1, 0, 2);
        let s = table_script("t", cidr, true, &[(HostPortMapping::tcp(8080, 80), ip)]);
        assert!(s.starts_with("add table ip t\ndelete table ip t\n"));
        assert!(s.contains("ip saddr 10.1.0.0/24 ip daddr != 10.1.0.0/24 masquerade"));
        assert!(s.contains("add element ip t hostports { tcp . 8080 : 10.1.0.2 . 80 }"));
        let s = table_script("t", cidr, false, &[]);
        assert!(!s.contains("daddr != "));
        assert!(!s.contains("element"));
        let r = remove_mappings_script("t", &[(HostPortMapping::udp(53, 5353), ip)]);
        assert_eq!(
            r,
            "add element ip t hostports { udp . 53 : 10.1.0.2 . 5353 }\n\
             delete element ip t hostports { udp . 53 : 10.1.0.2 . 5353 }\n"
        );
        assert_eq!(remove_mappings_script("t", &[]), "");
    }

    #[test]
    fn port_zero_rejected() {
        assert!(HostPortMapping::tcp(0, 80).validate().is_err());
        assert!(HostPortMapping::tcp(80, 0).validate().is_err());
        HostPortMapping::udp(53, 53).validate().unwrap();
    }
}
