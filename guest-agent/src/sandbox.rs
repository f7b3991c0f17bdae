//! CreateSandbox: the pod's identity inside the VM (hostname, DNS, /etc/hosts, interfaces,
//! clock, random seed).

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use agent_proto::pb;
use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};

use crate::sys::ioctl;

/// Errors setting up the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No interface matched the request.
    #[error("{0}")]
    NotFound(String),
    /// An OS operation failed.
    #[error("{op}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SandboxError {
    SandboxError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let op = op.into();
    move |source| SandboxError::Io { op, source }
}

/// Where sandbox files live (overridable so host tests do not touch the host's /etc).
#[derive(Debug, Clone)]
pub struct Paths {
    /// Directory receiving hostname, hosts and resolv.conf.
    pub etc: PathBuf,
    /// The kernel random device.
    pub random: PathBuf,
}

fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr, SandboxError> {
    s.parse()
        .map_err(|_| invalid(field, format!("{s:?} is not an IPv4 address")))
}

fn netmask(field: &str, prefix: u32) -> Result<Ipv4Addr, SandboxError> {
    if prefix > 32 {
        return Err(invalid(
            field,
            format!("{prefix} is not a prefix length (0-32)"),
        ));
    }
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Ok(Ipv4Addr::from(bits))
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(field: &str, s: &str) -> Result<[u8; 6], SandboxError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(invalid(field, format!("{s:?} is not a MAC address")));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| invalid(field, format!("{s:?} is not a MAC address")))?;
    }
    Ok(mac)
}

fn check_hostname(h: &str) -> Result<(), SandboxError> {
    let ok = h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "hostname",
            format!("{h:?} is not a valid hostname"),
        ))
    }
}

fn check_word(field: &str, s: &str) -> Result<(), SandboxError> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            format!("{s:?} is empty or contains whitespace"),
        ));
    }
    Ok(())
}

/// Renders resolv.conf.
pub fn resolv_conf(dns: &pb::DnsConfig) -> Result<String, SandboxError> {
    let mut out = String::new();
    for (i, s) in dns.servers.iter().enumerate() {
        let ip: std::net::IpAddr = s.parse().map_err(|_| {
            invalid(
                format!("dns.servers[{i}]"),
                format!("{s:?} is not an IP address"),
            )
        })?;
        out.push_str(&format!("nameserver {ip}\n"));
    }
    for (i, s) in dns.searches.iter().enumerate() {
        check_word(&format!("dns.searches[{i}]"), s)?;
    }
    for (i, s) in dns.options.iter().enumerate() {
        check_word(&format!("dns.options[{i}]"), s)?;
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// Renders /etc/hosts (localhost first, then the requested entries).
pub fn hosts_file(hostname: &str, entries: &[pb::HostEntry]) -> Result<String, SandboxError> {
    let mut out = String::from("127.0.0.1\tlocalhost\n");
    for (i, e) in entries.iter().enumerate() {
        let ip: std::net::IpAddr = e.ip.parse().map_err(|_| {
            invalid(
                format!("hosts[{i}].ip"),
                format!("{:?} is not an IP address", e.ip),
            )
        })?;
        if e.names.is_empty() {
            return Err(invalid(format!("hosts[{i}].names"), "empty"));
        }
        for n in &e.names {
            check_word(&format!("hosts[{i}].names"), n)?;
        }
        out.push_str(&format!("{ip}\t{}\n", e.names.join(" ")));
    }
    if !hostname.is_empty()
        && !entries
            .iter()
            .any(|e| e.names.iter().any(|n| n == hostname))
    {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    Ok(out)
}

/// Writes `data` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("kennel-tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

fn find_by_mac(mac: [u8; 6]) -> Result<String, SandboxError> {
    let want = mac.map(|b| format!("{b:02x}")).join(":");
    let all = ioctl::interfaces_with_mac().map_err(io("listing interfaces"))?;
    all.into_iter()
        .find(|(_, m)| *m == mac)
        .map(|(name, _)| name)
        .ok_or_else(|| SandboxError::NotFound(format!("no interface with MAC {want}")))
}

fn configure_interface(i: usize, itf: &pb::Interface) -> Result<(), SandboxError> {
    let f = |name: &str| format!("interfaces[{i}].{name}");
    let mac = if itf.mac.is_empty() {
        None
    } else {
        Some(parse_mac(&f("mac"), &itf.mac)?)
    };
    let addr = if itf.address.is_empty() {
        None
    } else {
        Some((
            ipv4(&f("address"), &itf.address)?,
            netmask(&f("prefix_len"), itf.prefix_len)?,
        ))
    };
    let gateway = if itf.gateway.is_empty() {
        None
    } else {
        Some(ipv4(&f("gateway"), &itf.gateway)?)
    };
    let mut routes = Vec::new();
    for (j, r) in itf.routes.iter().enumerate() {
        let dst = ipv4(&f(&format!("routes[{j}].destination")), &r.destination)?;
        let mask = netmask(&f(&format!("routes[{j}].prefix_len")), r.prefix_len)?;
        let gw = if r.gateway.is_empty() {
            None
        } else {
            Some(ipv4(&f(&format!("routes[{j}].gateway")), &r.gateway)?)
        };
        routes.push((dst, mask, gw));
    }
    let name = match (itf.name.as_str(), mac) {
        ("", Some(mac)) => find_by_mac(mac)?,
        ("", None) => return Err(invalid(f("name"), "either name or mac is required")),
        (n, _) => n.to_string(),
    };
    let op = |what: &str| format!("{what} on {name}");
    if let (false, Some(mac)) = (itf.name.is_empty(), mac) {
        ioctl::set_up(&name, false).map_err(io(op("bringing down")))?;
        ioctl::set_mac(&name, mac).map_err(io(op("setting the MAC")))?;
    }
    if itf.mtu != 0 {
        ioctl::set_mtu(&name, itf.mtu).map_err(io(op("setting the MTU")))?;
    }
    if let Some((a, m)) = addr {
        ioctl::set_ipv4(&name, a, m).map_err(io(op("setting the address")))?;
    }
    ioctl::set_up(&name, true).map_err(io(op("bringing up")))?;
    for (dst, mask, gw) in routes {
        ioctl::add_route(&name, dst, mask, gw).map_err(io(op(&format!("adding route {dst}"))))?;
    }
    if let Some(gw) = gateway {
        ioctl::add_route(
            &name,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Some(gw),
        )
        .map_err(io(op("adding the default route")))?;
    }
    Ok(())
}

/// Applies a CreateSandbox request. Everything is validated before anything changes.
pub fn create(req: &pb::CreateSandboxRequest, paths: &Paths) -> Result<(), SandboxError> {
    if !req.hostname.is_empty() {
        check_hostname(&req.hostname)?;
    }
    let resolv = req.dns.as_ref().map(resolv_conf).transpose()?;
    let hosts = hosts_file(&req.hostname, &req.hosts)?;
    if req.random_seed.len() > 4096 {
        return Err(invalid("random_seed", "longer than 4096 bytes"));
    }
    // Loopback first: local services need it whatever else is configured.
    let _ = ioctl::set_up("lo", true);

    if req.clock_unix_nanos != 0 {
        let ns = req.clock_unix_nanos;
        let ts = TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64);
        clock_settime(ClockId::CLOCK_REALTIME, ts).map_err(|e| SandboxError::Io {
            op: "setting the clock".into(),
            source: e.into(),
        })?;
    }
    if !req.random_seed.is_empty() {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&paths.random)
            .map_err(io(format!("opening {}", paths.random.display())))?;
        ioctl::add_entropy(&f, &req.random_seed).map_err(io("adding entropy"))?;
    }
    fs::create_dir_all(&paths.etc).map_err(io(format!("creating {}", paths.etc.display())))?;
    if !req.hostname.is_empty() {
        nix::unistd::sethostname(&req.hostname).map_err(|e| SandboxError::Io {
            op: "setting the hostname".into(),
            source: e.into(),
        })?;
        write_atomic(
            &paths.etc.join("hostname"),
            format!("{}\n", req.hostname).as_bytes(),
        )
        .map_err(io("writing hostname"))?;
    }
    write_atomic(&paths.etc.join("hosts"), hosts.as_bytes()).map_err(io("writing hosts"))?;
    if let Some(r) = resolv {
        write_atomic(&paths.etc.join("resolv.conf"), r.as_bytes())
            .map_err(io("writing resolv.conf"))?;
    }
    for (i, itf) in req.interfaces.iter().enumerate() {
        configure_interface(i, itf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_and_hosts_render() {
        let dns = pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns).unwrap(),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        let hosts = hosts_file(
            "web-0",
            &[pb::HostEntry {
                ip: "10.0.0.5".into(),
                names: vec!["web-0".into()],
            }],
        )
        .unwrap();
        assert_eq!(hosts, "127.0.0.1\tlocalhost\n10.0.0.5\tweb-0\n");
    }

    #[test]
    fn bad_fields_are_named() {
        let dns = pb::DnsConfig {
            servers: vec!["nope".into()],
            ..Default::default()
        };
        let e = resolv_conf(&dns).unwrap_err();
        assert!(e.to_string().starts_with("dns.servers[0]"), "{e}");
        assert!(parse_mac("mac", "aa:bb").is_err());
        assert_eq!(
            parse_mac("mac", "AA:bb:00:01:02:ff").unwrap(),
            [0xaa, 0xbb, 0, 1, 2, 0xff]
        );
        assert!(netmask("p", 33).is_err());
        assert_eq!(netmask("p", 24).unwrap(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask("p", 0).unwrap(), Ipv4Addr::UNSPECIFIED);
        assert!(check_hostname("bad host").is_err());
        let req = pb::CreateSandboxRequest {
            hostname: "-x".into(),
            ..Default::default()
        };
        let paths = Paths {
            etc: "/nonexistent".into(),
            random: "/nonexistent".into(),
        };
        let e = create(&req, &paths).unwrap_err();
        assert!(e.to_string().starts_with("hostname"), "{e}");
    }
}
