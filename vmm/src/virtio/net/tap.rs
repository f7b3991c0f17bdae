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

/// The interface name of tap descriptor `fd`, if it is attached with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR.
fn tap_name(fd: RawFd) -> Result<String, TapError> {
    let not_a_tap = |source| TapError::NotATap { fd, source };
    // SAFETY: F_GETFD takes no pointers; it only tells whether `fd` is open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(not_a_tap(io::Error::from_raw_os_error(libc::EBADF)));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: `fd` is open; TUNGETIFF writes one `struct ifreq` through the pointer, and `req` is
    // a live, correctly sized ifreq. Any other kind of descriptor fails without side effects.
    if unsafe { libc::ioctl(fd, TUNGETIFF as _, &mut req) } < 0 {
        return Err(not_a_tap(io::Error::last_os_error()));
    }
    let wanted = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if req.flags & wanted != wanted {
        return Err(not_a_tap(io::Error::other(format!(
            "tap flags {:#x}",
            req.flags
        ))));
    }
    let end = req
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(req.name.len());
    Ok(String::from_utf8_lossy(&req.name[..end]).into_owned())
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
        let name = tap_name(fd.as_raw_fd())?;
        let file = File::from(fd);
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

    /// Takes over descriptor number `fd` of this process (see [`Tap::from_fd`]). A descriptor
    /// that is not such a tap is left open and untouched.
    pub fn from_raw_fd(fd: RawFd) -> Result<Tap, TapError> {
        tap_name(fd)?;
        // SAFETY: `fd` is an open tap (checked above) handed to this process to own; nothing
        // else in the VMM opened it, so nothing else closes it.
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

    /// A network namespace made for one test (root and `ip` needed); removed on drop.
    struct TestNs(String);

    impl TestNs {
        fn new() -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let ns = TestNs(format!("kn-tap-{}-{nanos:x}", std::process::id()));
            ns.ip(&["netns", "add", &ns.0]);
            ns
        }

        fn ip(&self, args: &[&str]) {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }

        /// Opens tap `name` from a thread inside the namespace.
        fn open_tap(&self, name: &'static str) -> Tap {
            let path = format!("/run/netns/{}", self.0);
            std::thread::spawn(move || {
                let ns = File::open(&path).unwrap();
                // SAFETY: setns takes an open descriptor and a flag; it moves only this thread.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                Tap::open(name).unwrap()
            })
            .join()
            .unwrap()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .output();
        }
    }

    fn wait_readable(tap: &Tap) {
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 200) };
    }

    /// A real tap in a namespace the test makes: an ARP request written as a guest would
    /// (vnet header + frame) is answered by the namespace's stack, and the reply reads back
    /// with a vnet header. The same tap handed over as a descriptor is accepted.
    #[test]
    fn frames_go_through_a_real_tap_by_name_and_by_fd() {
        let ns = TestNs::new();
        let tap = ns.open_tap("kntest0");
        assert_eq!(tap.name(), "kntest0");
        ns.ip(&["-n", &ns.0, "addr", "add", "10.78.0.1/24", "dev", "kntest0"]);
        ns.ip(&["-n", &ns.0, "link", "set", "kntest0", "up"]);
        assert_eq!(
            tap.read_frame(&mut [0u8; 2048]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        let guest_mac = [0x02, 0, 0, 0, 0, 2];
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend([0xff; 6]);
        frame.extend(guest_mac);
        frame.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]); // ARP, Ethernet/IPv4, request
        frame.extend(guest_mac);
        frame.extend([10, 78, 0, 2]);
        frame.extend([0; 6]);
        frame.extend([10, 78, 0, 1]);
        assert_eq!(tap.write_frame(&frame).unwrap(), frame.len());

        let mut buf = vec![0u8; 65_600];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reply = loop {
            assert!(std::time::Instant::now() < deadline, "no ARP reply");
            match tap.read_frame(&mut buf) {
                Ok(n) => {
                    let f = &buf[..n];
                    // header, dst MAC = guest, ARP, opcode 2 (reply)
                    if n >= VNET_HDR_LEN + 42
                        && f[VNET_HDR_LEN..VNET_HDR_LEN + 6] == guest_mac
                        && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [0x08, 0x06]
                        && f[VNET_HDR_LEN + 20..VNET_HDR_LEN + 22] == [0, 2]
                    {
                        break f.to_vec();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&tap),
                Err(e) => panic!("read: {e}"),
            }
        };
        assert_eq!(reply[1], 0, "no GSO with offloads off");
        // Sender protocol address of the reply is the namespace's.
        assert_eq!(
            &reply[VNET_HDR_LEN + 28..VNET_HDR_LEN + 32],
            &[10, 78, 0, 1]
        );

        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            .unwrap();
        let dup = OwnedFd::from(tap.file.try_clone().unwrap());
        let raw = dup.as_raw_fd();
        std::mem::forget(dup); // from_raw_fd takes it over
        let handed = Tap::from_raw_fd(raw).unwrap();
        assert_eq!(handed.name(), "kntest0");
        assert_eq!(handed.write_frame(&frame).unwrap(), frame.len());
    }

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
        let f = tempfile::tempfile().unwrap();
        assert!(Tap::from_raw_fd(f.as_raw_fd()).is_err());
        // Still open: refusing it did not close it.
        assert!(f.metadata().is_ok());
        // SAFETY: F_GETFD on a descriptor the test owns.
        assert!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) } >= 0);
    }
}
