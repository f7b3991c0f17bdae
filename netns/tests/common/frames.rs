//! Raw Ethernet frames for talking through a tap as a guest NIC would
//! (each frame prefixed with the 10-byte `virtio_net_hdr`, all zero).

use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const VNET_HDR_LEN: usize = 10;

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP request "who has `target`? tell `ip`".
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&mac);
    p.extend_from_slice(&ip.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target.octets());
    eth([0xff; 6], mac, 0x0806, &p)
}

/// An ICMP echo request.
pub fn icmp_echo(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&1u16.to_be_bytes());
    icmp.extend_from_slice(b"kennel-tap-probe");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    eth(dst_mac, src_mac, 0x0800, &ip)
}

/// Writes `frame` to the tap and waits (generously) for a frame that
/// `matches`; returns that frame without the vnet header.
pub fn exchange(tap: &mut File, frame: &[u8], matches: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65536];
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            tap.write_all(frame).expect("write frame to tap");
            next_send = Instant::now() + Duration::from_secs(1);
        }
        match tap.read(&mut buf) {
            Ok(n) if n > VNET_HDR_LEN => {
                let f = &buf[VNET_HDR_LEN..n];
                if matches(f) {
                    return Some(f.to_vec());
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("read tap: {e}"),
        }
    }
    None
}

/// Is `f` an ARP reply from `ip` addressed to `mac`? Returns the sender MAC.
pub fn arp_reply_from(f: &[u8], ip: Ipv4Addr, mac: [u8; 6]) -> Option<[u8; 6]> {
    if f.len() < 42
        || f[12..14] != [8, 6]
        || f[20..22] != [0, 2]
        || f[28..32] != ip.octets()
        || f[0..6] != mac
    {
        return None;
    }
    let mut sender = [0u8; 6];
    sender.copy_from_slice(&f[22..28]);
    Some(sender)
}

/// Is `f` an ICMP echo reply from `src` to `dst` with identifier `id`?
pub fn is_echo_reply(f: &[u8], src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> bool {
    f.len() >= 42
        && f[12..14] == [8, 0]
        && f[23] == 1
        && f[26..30] == src.octets()
        && f[30..34] == dst.octets()
        && f[34] == 0
        && f[38..40] == id.to_be_bytes()
}
