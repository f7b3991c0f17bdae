//! Template mode (kernel argument `kennel.test=template`): signal "ready" with marker 2, then
//! answer vsock connections on port 5000 forever. Each line `info` gets back this VM's CID and
//! 16 bytes from /dev/urandom; `seed <hex>` mixes host bytes into the random pool first, as the
//! agent does for every VM restored from a template.

use crate::{cstr, say};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const PORT: u32 = 5000;
const MARK_READY: u8 = 2;
/// _IOW('R', 0x03, int[2])
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// _IO(7, 0xb9)
const IOCTL_VM_SOCKETS_GET_LOCAL_CID: libc::c_ulong = 0x7b9;

pub fn serve() -> Result<(), String> {
    let listener = crate::devices::vsock_listener(PORT)?;
    crate::mark(MARK_READY)?;
    say("template ready");
    loop {
        // SAFETY: accept on a listening socket; null address pointers are allowed.
        let fd = unsafe {
            libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: accept returned a new fd owned by nothing else.
        let conn = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut reader = BufReader::new(&conn);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            let reply = answer(line.trim());
            if (&conn).write_all(reply.as_bytes()).is_err() {
                break;
            }
            line.clear();
        }
    }
}

fn answer(cmd: &str) -> String {
    if let Some(hex) = cmd.strip_prefix("seed ") {
        return match reseed(hex) {
            Ok(()) => "seeded\n".into(),
            Err(e) => format!("error {e}\n"),
        };
    }
    if cmd == "info" {
        let mut rand = [0u8; 16];
        let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut rand));
        if ok.is_err() {
            return "error urandom\n".into();
        }
        let hex: String = rand.iter().map(|b| format!("{b:02x}")).collect();
        return format!("cid={} rand={hex}\n", local_cid());
    }
    format!("error unknown command {cmd:?}\n")
}

fn local_cid() -> u32 {
    let path = cstr("/dev/vsock");
    // SAFETY: plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return 0;
    }
    let mut cid: u32 = 0;
    // SAFETY: the ioctl writes one u32 through the pointer.
    unsafe {
        libc::ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &mut cid);
        libc::close(fd);
    }
    cid
}

fn reseed(hex: &str) -> Result<(), String> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "bad hex".to_string())?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend(((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend((bytes.len() as i32).to_ne_bytes());
    info.extend(&bytes);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| e.to_string())?;
    // SAFETY: `info` is a rand_pool_info with `buf_size` bytes of payload after the header.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
