//! ioctl-based syscalls: random pool seeding, terminals, IPv4 interface and route setup.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const SIOCADDRT: libc::c_ulong = 0x890B;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891C;
const SIOCSIFMTU: libc::c_ulong = 0x8922;
const SIOCSIFHWADDR: libc::c_ulong = 0x8924;
const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Adds `seed` to the kernel random pool and credits it as entropy (`RNDADDENTROPY`).
pub fn add_entropy(random: &std::fs::File, seed: &[u8]) -> io::Result<()> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let words = seed.len().div_ceil(4);
    let mut buf = vec![0u32; 2 + words];
    buf[0] = (seed.len() * 8) as u32;
    buf[1] = seed.len() as u32;
    let bytes: Vec<u8> = buf[2..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut payload = bytes;
    payload[..seed.len()].copy_from_slice(seed);
    for (i, chunk) in payload.chunks(4).enumerate() {
        buf[2 + i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    // SAFETY: `buf` is a properly laid out rand_pool_info with buf_size bytes of data
    // following the header; the kernel only reads it.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, buf.as_ptr()) })
}

/// Makes `fd` (a terminal) the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument; no memory is passed.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) })
}

/// Sets the window size of terminal `fd`.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from a valid pointer.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })
}

/// Opens a new pseudo-terminal pair: (master, slave), both close-on-exec.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two descriptors into the provided ints; name/termios/winsize
    // may be null.
    check(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    })?;
    // SAFETY: both descriptors were just created by openpty and are owned by us.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    super::spawn::set_cloexec(m.as_raw_fd(), true)?;
    super::spawn::set_cloexec(s.as_raw_fd(), true)?;
    Ok((m, s))
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid ifreq for the whole call; the kernel reads/writes within it.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) })
}

/// Sets the MAC address of interface `name` (interface must be down).
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: writing the hwaddr member of the ifreq union.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    }
    ifioctl(&sock, SIOCSIFHWADDR, &mut req)
}

/// Sets the MTU of interface `name`.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ifioctl(&sock, SIOCSIFMTU, &mut req)
}

/// Sets the IPv4 address and netmask of interface `name`.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ifioctl(&sock, SIOCSIFADDR, &mut req)?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    ifioctl(&sock, SIOCSIFNETMASK, &mut req)
}

/// Brings interface `name` up or down.
pub fn set_up(name: &str, up: bool) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    ifioctl(&sock, SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let mut flags = unsafe { req.ifr_ifru.ifru_flags };
    let bits = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    if up {
        flags |= bits;
    } else {
        flags &= !bits;
    }
    req.ifr_ifru.ifru_flags = flags;
    ifioctl(&sock, SIOCSIFFLAGS, &mut req)
}

/// `struct rtentry` from <net/route.h>.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Adds an IPv4 route to `dst/mask` via `gateway` (or directly on `dev` when `None`).
pub fn add_route(
    dev: &str,
    dst: Ipv4Addr,
    mask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut dev_c = std::ffi::CString::new(dev)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in device name"))?
        .into_bytes_with_nul();
    let mut flags = RTF_UP;
    if gateway.is_some() {
        flags |= RTF_GATEWAY;
    }
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(dst),
        rt_gateway: sockaddr_in(gateway.unwrap_or(Ipv4Addr::UNSPECIFIED)),
        rt_genmask: sockaddr_in(mask),
        rt_flags: flags,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev_c.as_mut_ptr() as *mut libc::c_char,
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: `rt` is a valid rtentry whose rt_dev points at a NUL-terminated buffer that
    // outlives the call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCADDRT, &mut rt as *mut RtEntry) };
    match check(ret) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

const SIOCGIFHWADDR: libc::c_ulong = 0x8927;

/// Every interface of this network namespace with its hardware address (namespace-aware,
/// unlike /sys/class/net, which shows the namespace sysfs was mounted in).
pub fn interfaces_with_mac() -> io::Result<Vec<(String, [u8; 6])>> {
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    // SAFETY: walks the array up to its terminating entry; names are NUL-terminated.
    unsafe {
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    let sock = inet_socket()?;
    let mut out = Vec::new();
    for name in names {
        let mut req = ifreq(&name)?;
        if ifioctl(&sock, SIOCGIFHWADDR, &mut req).is_err() {
            continue;
        }
        let mut mac = [0u8; 6];
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        for (m, d) in mac.iter_mut().zip(data) {
            *m = d as u8;
        }
        out.push((name, mac));
    }
    Ok(out)
}
