//! Device checks (kernel argument `kennel.test=devices`): virtio-blk disks read-only and
//! read-write, a disk attached after boot, and vsock in both directions. The host side of each
//! step is driven by the test that booted the VM, keyed on the lines printed here.

use crate::{cstr, say};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const GUEST_LISTEN_PORT: u32 = 5000;
const HOST_LISTEN_PORT: u32 = 6000;
const HOST_CID: u32 = 2;

pub fn checks() -> Result<(), String> {
    disks()?;
    vsock_listen()?;
    vsock_connect()?;
    hot_attached_disk()
}

fn mount_ext4(dev: &str, target: &str, read_only: bool) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    let (d, t, f) = (cstr(dev), cstr(target), cstr("ext4"));
    let flags = if read_only { libc::MS_RDONLY } else { 0 };
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(d.as_ptr(), t.as_ptr(), f.as_ptr(), flags, std::ptr::null()) };
    if rc != 0 {
        return Err(format!(
            "mount {dev} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn umount(target: &str) -> Result<(), String> {
    let t = cstr(target);
    // SAFETY: valid NUL-terminated string.
    if unsafe { libc::umount(t.as_ptr()) } != 0 {
        return Err(format!(
            "umount {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))
}

fn disks() -> Result<(), String> {
    say(&format!(
        "vda serial {}",
        read("/sys/block/vda/serial")?.trim()
    ));
    mount_ext4("/dev/vda", "/mnt/a", true)?;
    say(&format!(
        "disk a says: {}",
        read("/mnt/a/hello.txt")?.trim()
    ));
    if std::fs::write("/mnt/a/nope", b"x").is_ok() {
        return Err("wrote to a read-only disk".into());
    }
    mount_ext4("/dev/vdb", "/mnt/b", false)?;
    std::fs::write("/mnt/b/from-guest.txt", b"written by the guest\n")
        .map_err(|e| format!("write /mnt/b/from-guest.txt: {e}"))?;
    umount("/mnt/b")?;
    say("disk b written");
    Ok(())
}

fn vsock_socket() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(format!("vsock socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

/// A vsock stream socket listening on `port` for any CID.
pub fn vsock_listener(port: u32) -> Result<OwnedFd, String> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = vsock_addr(libc::VMADDR_CID_ANY, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes; the fd is open.
    unsafe {
        if libc::bind(
            sock.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        ) != 0
            || libc::listen(sock.as_raw_fd(), 4) != 0
        {
            return Err(format!("vsock listen: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(sock)
}

fn vsock_listen() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let sock = vsock_listener(GUEST_LISTEN_PORT)?;
    say(&format!("vsock listening on {GUEST_LISTEN_PORT}"));
    // SAFETY: accept on a listening socket; null address pointers are allowed.
    let conn =
        unsafe { libc::accept(sock.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    if conn < 0 {
        return Err(format!("vsock accept: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: accept returned a new fd that nothing else owns.
    let stream = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(conn) });
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("vsock read: {e}"))?;
    (&stream)
        .write_all(format!("echo: {line}").as_bytes())
        .map_err(|e| format!("vsock write: {e}"))?;
    say(&format!("vsock host said: {}", line.trim()));
    Ok(())
}

fn vsock_connect() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = vsock_addr(HOST_CID, HOST_LISTEN_PORT);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes; the fd is open.
    if unsafe {
        libc::connect(
            sock.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(format!(
            "vsock connect to host: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut stream = std::fs::File::from(sock);
    stream
        .write_all(b"hello from the guest\n")
        .map_err(|e| format!("vsock write: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("vsock read: {e}"))?;
    say(&format!("vsock host replied: {}", reply.trim()));
    Ok(())
}

fn hot_attached_disk() -> Result<(), String> {
    say("waiting for vdc");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let size: u64 = read("/sys/block/vdc/size")?.trim().parse().unwrap_or(0);
        if size > 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err("vdc never got a backing file".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    say(&format!(
        "vdc serial {}",
        read("/sys/block/vdc/serial")?.trim()
    ));
    mount_ext4("/dev/vdc", "/mnt/c", true)?;
    say(&format!(
        "disk c says: {}",
        read("/mnt/c/hello.txt")?.trim()
    ));
    Ok(())
}
