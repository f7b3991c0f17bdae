//! Benchmark mode (kernel argument `kennel.test=bench`): sequential read of /dev/vda, then a
//! vsock echo server on port 5000 for round-trip timing by the host (until it disconnects).

use crate::say;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

pub fn run() -> Result<(), String> {
    let mut disk = std::fs::File::open("/dev/vda").map_err(|e| format!("open /dev/vda: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0usize;
    loop {
        let n = disk
            .read(&mut buf)
            .map_err(|e| format!("read /dev/vda: {e}"))?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let secs = start.elapsed().as_secs_f64();
    say(&format!(
        "blkbench: {total} bytes in {secs:.3} s = {:.1} MB/s",
        total as f64 / secs / 1e6
    ));
    let listener = crate::devices::vsock_listener(5000)?;
    say("echo server ready");
    // SAFETY: accept on a listening socket; null address pointers are allowed.
    let fd = unsafe {
        libc::accept(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(format!("accept: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: accept returned a new fd that nothing else owns.
    let mut conn = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut b = [0u8; 4096];
    loop {
        match conn.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        }
    }
    say("echo server done");
    Ok(())
}
