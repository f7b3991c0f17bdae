//! Leaf syscall module: the only place in this crate that uses `unsafe`.
//!
//! Three small wrappers: entering a network namespace (`setns`), an exclusive
//! advisory file lock (`flock`), and the TUN/TAP ioctls that create and open
//! persistent taps.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNSETPERSIST` = `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// `TUNSETOWNER` = `_IOW('T', 204, int)`.
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
/// `TUNSETVNETHDRSZ` = `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` as the TUN ioctls read it: a name and a flags field,
/// padded to the kernel's 40-byte size.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Moves the calling thread into the network namespace behind `ns`.
pub(crate) fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file descriptor that stays valid for the whole
    // call; setns only changes the calling thread's namespace and reads no
    // memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes an exclusive `flock` on `file`, waiting for other holders. The lock
/// is released when the file is closed.
pub(crate) fn flock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call;
        // flock takes no pointers.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn ifreq(name: &str, flags: libc::c_short) -> io::Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    Ok(req)
}

fn tun_ioctl_int(file: &File, request: libc::c_ulong, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST and TUNSETOWNER take their argument by value (an
    // integer, not a pointer); `file` is an open /dev/net/tun descriptor.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, value) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `/dev/net/tun` and attaches to (or creates) the tap `name` with
/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, in the calling thread's network
/// namespace. The returned file is the tap's queue.
pub(crate) fn open_tap(name: &str) -> io::Result<File> {
    let mut req = ifreq(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    // SAFETY: `req` is a properly sized, initialised `struct ifreq` that lives
    // across the call; the kernel reads and writes only within it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Creates the tap `name` as a persistent device owned by root (uid 0), so a
/// later process (the VMM) can attach to it by name. Idempotent.
pub(crate) fn create_persistent_tap(name: &str) -> io::Result<()> {
    let file = open_tap(name)?;
    tun_ioctl_int(&file, TUNSETOWNER, 0)?;
    tun_ioctl_int(&file, TUNSETPERSIST, 1)?;
    Ok(())
}

/// Sets the length of the `virtio_net_hdr` that prefixes every frame on a
/// tap queue (10 by default; 12 for virtio 1.0 / mergeable rx buffers).
pub(crate) fn set_vnet_hdr_len(tap: &File, len: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points
    // at `len`, alive for the whole call; `tap` is an open tun descriptor.
    let rc = unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            TUNSETVNETHDRSZ as _,
            &len as *const libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
