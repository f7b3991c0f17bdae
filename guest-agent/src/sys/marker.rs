//! The boot marker: one byte written to the VMM's marker page through a mapping of `/dev/mem`
//! (a plain `pwrite` is refused for MMIO, so the page is mapped and written like device memory).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const PAGE: usize = 4096;

/// Writes `value` at physical address `addr` (page aligned) through `mem_dev`.
pub fn write_byte(mem_dev: &Path, addr: u64, value: u8) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mem_dev)?;
    let offset =
        libc::off_t::try_from(addr).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: maps one page of `f` at `offset`; the result is checked before use and unmapped
    // below; no Rust reference to the mapping escapes.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `p` is a live, writable one-page mapping; a volatile write reaches the device.
    unsafe {
        std::ptr::write_volatile(p as *mut u8, value);
        libc::munmap(p, PAGE);
    }
    Ok(())
}
