//! Links, addresses and routes over rtnetlink. The functions here run inside
//! a tokio runtime on a thread that has entered the target namespace; the
//! netlink socket belongs to that namespace.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Netlink failures.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The netlink socket could not be opened.
    #[error("open netlink socket")]
    Connect(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("{op}")]
    Netlink {
        /// What was being done.
        op: String,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link with the wanted name exists but is of another kind.
    #[error("link {name} exists but is a {kind}, not a {wanted}")]
    WrongKind {
        /// Link name.
        name: String,
        /// Its kind.
        kind: String,
        /// Kind wanted.
        wanted: String,
    },
    /// A link that was just created or looked up is missing.
    #[error("link {0} not found")]
    Missing(String),
    /// A tap device ioctl failed.
    #[error("tap {name}")]
    Tap {
        /// Tap name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let op = op.into();
    move |source| LinkError::Netlink { op, source }
}

fn errno_of(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

/// A link as seen by netlink.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub controller: Option<u32>,
    pub up: bool,
    pub mac: Option<Vec<u8>>,
}

impl Link {
    fn from_msg(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            controller: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mac: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Address(a) => link.mac = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(kind_name(k));
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Tun => "tun".into(),
        InfoKind::Dummy => "dummy".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A netlink connection in the current thread's namespace.
pub(crate) struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket; must run inside a tokio runtime.
    pub fn connect() -> Result<Self, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link named `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, LinkError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(Link::from_msg(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == libc::ENODEV => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    async fn require(&self, name: &str) -> Result<Link, LinkError> {
        self.link(name)
            .await?
            .ok_or_else(|| LinkError::Missing(name.to_string()))
    }

    /// All links.
    pub async fn links(&self) -> Result<Vec<Link>, LinkError> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(nl("list links"))? {
            out.push(Link::from_msg(&msg));
        }
        Ok(out)
    }

    /// All IPv4 addresses with the index of their link.
    pub async fn ipv4_addrs(&self) -> Result<Vec<(u32, Ipv4Net)>, LinkError> {
        let mut stream = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(nl("list addresses"))? {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    if let Ok(net) = Ipv4Net::new(*ip, msg.header.prefix_len) {
                        out.push((msg.header.index, net));
                    }
                }
            }
        }
        Ok(out)
    }

    /// IPv4 unicast routes of the main table with a non-zero prefix, with
    /// their output link index (0 when none).
    pub async fn ipv4_routes(&self) -> Result<Vec<(u32, Ipv4Net)>, LinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(nl("list routes"))? {
            let h = &msg.header;
            let main = h.table == RouteHeader::RT_TABLE_MAIN
                || msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Table(t) if *t == u32::from(RouteHeader::RT_TABLE_MAIN)));
            if !main || h.kind != RouteType::Unicast || h.destination_prefix_length == 0 {
                continue;
            }
            let mut dest = None;
            let mut oif = 0;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(*ip),
                    RouteAttribute::Oif(i) => oif = *i,
                    _ => {}
                }
            }
            if let Some(Ok(net)) = dest.map(|d| Ipv4Net::new(d, h.destination_prefix_length)) {
                out.push((oif, net));
            }
        }
        Ok(out)
    }

    /// Creates the bridge `name` unless it exists. Returns it and whether it
    /// was created now.
    pub async fn ensure_bridge(&self, name: &str) -> Result<(Link, bool), LinkError> {
        if let Some(link) = self.link(name).await? {
            if link.kind.as_deref() != Some("bridge") {
                return Err(LinkError::WrongKind {
                    name: name.into(),
                    kind: link.kind.unwrap_or_else(|| "device".into()),
                    wanted: "bridge".into(),
                });
            }
            return Ok((link, false));
        }
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(nl(format!("create bridge {name}")))?;
        Ok((self.require(name).await?, true))
    }

    /// Adds `ip/prefix` to the link unless it is already there.
    pub async fn ensure_addr(&self, index: u32, net: Ipv4Net) -> Result<(), LinkError> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(net.addr()), net.prefix_len())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == libc::EEXIST => Ok(()),
            Err(e) => Err(nl(format!("add address {net}"))(e)),
        }
    }

    /// Sets the link up.
    pub async fn set_up(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set link {index} up")))
    }

    /// Enslaves the link to a bridge.
    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).build())
            .execute()
            .await
            .map_err(nl(format!("attach link {index} to bridge {bridge}")))
    }

    /// Turns on hairpin mode of a bridge port, so a pod can reach itself
    /// through a hostPort (the DNAT-ed frame leaves by the port it came in).
    pub async fn set_hairpin(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl(format!("set hairpin on bridge port {index}")))
    }

    /// Sets the link's MAC address.
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("set MAC of link {index}")))
    }

    /// Renames a (down) link.
    pub async fn rename(&self, index: u32, name: &str) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(name.to_string())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("rename link {index} to {name}")))
    }

    /// Creates a veth pair.
    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<(), LinkError> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(nl(format!("create veth {name}")))
    }

    /// Moves a link into the namespace behind `ns`.
    pub async fn move_to_ns(&self, index: u32, ns: &std::fs::File) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("move link {index} to pod namespace")))
    }

    /// Deletes the link `name`; returns false if it did not exist.
    pub async fn delete(&self, name: &str) -> Result<bool, LinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == libc::ENODEV => Ok(false),
            Err(e) => Err(nl(format!("delete link {name}"))(e)),
        }
    }

    /// Adds a default route via `gateway` unless one exists.
    pub async fn ensure_default_route(&self, gateway: Ipv4Addr) -> Result<(), LinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        match self.handle.route().add(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == libc::EEXIST => Ok(()),
            Err(e) => Err(nl(format!("add default route via {gateway}"))(e)),
        }
    }
}
