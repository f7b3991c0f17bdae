//! Network checks (kernel argument `kennel.test=net`): configures eth0 (virtio-net on the host's
//! tap) from `kennel.net.addr=IP/PREFIX`, connects over TCP to `kennel.net.server=IP:PORT` (a
//! server the test runs in its network namespace), exchanges a line, then moves
//! `kennel.net.bulk=BYTES` each way and checks every byte.

use crate::say;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const IFACE: &str = "eth0";

/// Byte `i` of a bulk transfer (both sides use the same pattern).
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn arg<'a>(cmdline: &'a str, key: &str) -> Result<&'a str, String> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .ok_or_else(|| format!("kernel argument {key}= missing"))
}

pub fn checks() -> Result<(), String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| e.to_string())?;
    let addr = arg(&cmdline, "kennel.net.addr")?;
    let server: SocketAddr = arg(&cmdline, "kennel.net.server")?
        .parse()
        .map_err(|e| format!("kennel.net.server: {e}"))?;
    let bulk: usize = arg(&cmdline, "kennel.net.bulk")?
        .parse()
        .map_err(|e| format!("kennel.net.bulk: {e}"))?;
    let (ip, prefix) = addr
        .split_once('/')
        .ok_or_else(|| format!("kennel.net.addr {addr:?} is not IP/PREFIX"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("address {ip}: {e}"))?;
    let prefix: u32 = prefix
        .parse()
        .map_err(|e| format!("prefix {prefix}: {e}"))?;
    if prefix > 32 {
        return Err(format!("prefix {prefix} > 32"));
    }
    let mac = std::fs::read_to_string(format!("/sys/class/net/{IFACE}/address"))
        .map_err(|e| format!("{IFACE} is missing: {e}"))?;
    say(&format!("{IFACE} mac {}", mac.trim()));
    let features = std::fs::read_to_string(format!("/sys/class/net/{IFACE}/device/features"))
        .unwrap_or_default();
    say(&format!("{IFACE} virtio features {}", features.trim()));
    configure(ip, prefix)?;
    if let Ok(segs) = arg(&cmdline, "kennel.net.min_tso_segs") {
        std::fs::write("/proc/sys/net/ipv4/tcp_min_tso_segs", segs)
            .map_err(|e| format!("tcp_min_tso_segs: {e}"))?;
        say(&format!("tcp_min_tso_segs {segs}"));
    }
    say(&format!("{IFACE} up with {ip}/{prefix}"));
    talk(server, bulk)
}

fn socket() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(IFACE.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    fd: &OwnedFd,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
    what: &str,
) -> Result<(), String> {
    // SAFETY: `req` is a valid ifreq for the duration of the call; these requests read or write
    // only that struct.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Address, netmask (which adds the connected route) and IFF_UP, as `ip addr add` + `ip link set up`.
fn configure(ip: Ipv4Addr, prefix: u32) -> Result<(), String> {
    let fd = socket()?;
    let mut req = ifreq();
    req.ifr_ifru.ifru_addr = sockaddr(ip);
    ioctl(&fd, libc::SIOCSIFADDR, &mut req, "SIOCSIFADDR")?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let mut req = ifreq();
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(&fd, libc::SIOCSIFNETMASK, &mut req, "SIOCSIFNETMASK")?;
    let mut req = ifreq();
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS")
}

fn connect(server: SocketAddr) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match TcpStream::connect_timeout(&server, Duration::from_secs(30)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                say(&format!("connect {server}: {e}; retrying"));
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(format!("connect {server}: {e}")),
        }
    }
}

fn talk(server: SocketAddr, bulk: usize) -> Result<(), String> {
    let mut s = connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("tcp: {e}");
    s.write_all(b"hello from the guest over virtio-net\n")
        .map_err(io)?;
    let mut r = BufReader::new(s.try_clone().map_err(io)?);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    say(&format!("tcp host replied: {}", line.trim()));

    // Guest → host.
    s.write_all(format!("bulk {bulk}\n").as_bytes())
        .map_err(io)?;
    // A whole number of pattern periods, so every chunk starts at pattern(0).
    let chunk: Vec<u8> = (0..251 * 256).map(pattern).collect();
    let started = Instant::now();
    let mut sent = 0;
    while sent < bulk {
        let n = (bulk - sent).min(chunk.len());
        s.write_all(&chunk[..n]).map_err(io)?;
        sent += n;
    }
    line.clear();
    r.read_line(&mut line).map_err(io)?;
    let up = started.elapsed();
    if line.trim() != format!("got {bulk}") {
        return Err(format!("host answered {:?} to the upload", line.trim()));
    }
    say(&format!(
        "tcp sent {bulk} bytes in {:.3} s",
        up.as_secs_f64()
    ));

    // Host → guest.
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < bulk {
        let want = (bulk - got).min(buf.len());
        let n = r.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(format!("host closed after {got} of {bulk} bytes"));
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i)) {
            return Err(format!("byte {} differs", got + i));
        }
        got += n;
    }
    let down = started.elapsed();
    s.write_all(format!("done {got}\n").as_bytes())
        .map_err(io)?;
    say(&format!(
        "tcp received {got} bytes in {:.3} s",
        down.as_secs_f64()
    ));
    say("net checks passed");
    Ok(())
}
