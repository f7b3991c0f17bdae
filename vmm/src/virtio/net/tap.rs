//! Leaf syscall module of the net device: opens a tap (`/dev/net/tun`, `TUNSETIFF` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), sets a 12-byte vnet header (`TUNSETVNETHDRSZ`) and
//! turns every offload off (`TUNSETOFFLOAD 0`) until the guest accepts some, non-blocking. The
//! only unsafe code of the device.

use super::VNET_HDR_LEN;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNGETIFF` = `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUNSETVNETHDRSZ` = `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// Offload flags for `TUNSETOFFLOAD`: the tap may hand over partial checksums...
pub const TUN_F_CSUM: u32 = 0x01;
/// ...TCPv4 segmentation offload (large frames)...
pub const TUN_F_TSO4: u32 = 0x02;
/// ...and TCPv6 segmentation offload.
pub const TUN_F_TSO6: u32 = 0x04;

/// Errors opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error("invalid tap name {0:?} (1 to 15 bytes, no NUL)")]
    Name(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    /// The tap cannot be attached (missing CAP_NET_ADMIN, owned by another user, not a tap, busy).
    #[error("cannot attach to tap {name}")]
    Attach {
        /// Interface name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A handed-over descriptor is not a tap with a vnet header.
    #[error("file descriptor {fd} is not a tap opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR")]
    NotATap {
        /// The descriptor.
        fd: RawFd,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An ioctl configuring the tap failed.
    #[error("cannot configure tap {name}: {what}")]
    Configure {
        /// Interface name.
        name: String,
        /// The operation.
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` as the TUN ioctls use it: a name and a flags field, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap queue carrying `virtio_net_hdr_v1` + frame per read and write.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the tap `name` in the current network namespace (a tap that does not exist is
    /// created by the kernel and vanishes with this process).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(TapError::Name(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `file` is an open descriptor; TUNSETIFF reads (and updates) one `struct ifreq`
        // through the pointer, and `req` is a live, correctly sized and aligned ifreq.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(TapError::Attach {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: name.into(),
        };
        tap.configure()?;
        Ok(tap)
    }

    /// Takes over a tap descriptor handed to this process (e.g. by kennel-cri). It must be a tap
    /// attached with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`; it is made non-blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let file = File::from(fd);
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: `file` owns an open descriptor; TUNGETIFF writes one `struct ifreq` through the
        // pointer, and `req` is a live, correctly sized ifreq. A non-tun descriptor fails.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNGETIFF as _, &mut req) };
        let wanted = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if rc < 0 || req.flags & wanted != wanted {
            let source = if rc < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::other(format!("tap flags {:#x}", req.flags))
            };
            return Err(TapError::NotATap { fd: raw, source });
        }
        let end = req
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(req.name.len());
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        // SAFETY: F_GETFL/F_SETFL on a descriptor `file` owns; no pointers.
        let rc = unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        let tap = Tap { file, name };
        if rc < 0 {
            return Err(tap.configure_error("O_NONBLOCK", io::Error::last_os_error()));
        }
        tap.configure()?;
        Ok(tap)
    }

    /// Takes over descriptor number `fd` of this process (see [`Tap::from_fd`]).
    pub fn from_raw_fd(fd: RawFd) -> Result<Tap, TapError> {
        // SAFETY: F_GETFD takes no pointers; it only tells whether `fd` is open.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(TapError::NotATap {
                fd,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is open (checked above) and was handed to this process to own; nothing
        // else in the VMM uses that number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Self::from_fd(owned)
    }

    fn configure(&self) -> Result<(), TapError> {
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points to a live local.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr_len) };
        if rc < 0 {
            return Err(self.configure_error("TUNSETVNETHDRSZ", io::Error::last_os_error()));
        }
        self.set_offload(0)
    }

    /// Sets which offloads the tap may use in frames it hands over (`TUN_F_*`); it must match
    /// what the guest accepted (GUEST_CSUM, GUEST_TSO4, GUEST_TSO6).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is accessed.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(self.configure_error("TUNSETOFFLOAD", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn configure_error(&self, what: &'static str, source: io::Error) -> TapError {
        TapError::Configure {
            name: self.name.clone(),
            what,
            source,
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (vnet header + Ethernet frame); `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (vnet header + Ethernet frame).
    pub fn write_frame(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(Tap::open(""), Err(TapError::Name(_))));
        assert!(matches!(
            Tap::open("a-name-longer-than-15"),
            Err(TapError::Name(_))
        ));
        assert!(matches!(Tap::open("a\0b"), Err(TapError::Name(_))));
    }

    #[test]
    fn a_non_tap_descriptor_is_refused() {
        let f = tempfile::tempfile().unwrap();
        let e = Tap::from_fd(OwnedFd::from(f)).unwrap_err();
        assert!(matches!(e, TapError::NotATap { .. }), "{e}");
        assert!(matches!(
            Tap::from_raw_fd(-1),
            Err(TapError::NotATap { .. })
        ));
    }
}
