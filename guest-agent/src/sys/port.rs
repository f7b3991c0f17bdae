//! Writing one byte to an x86 I/O port from user mode, for guests without /dev/port
//! (it needs PCI or ISA in the kernel).

use std::io;

/// Writes `value` to I/O `port` with `ioperm` + `out`, in a short-lived child process so a
/// hypervisor that faults the instruction costs only that child. Returns the child's pid
/// (the caller's reaper collects it: exit 0 = written).
#[cfg(target_arch = "x86_64")]
pub fn outb_in_child(port: u16, value: u8) -> io::Result<libc::pid_t> {
    // SAFETY: a raw clone without CLONE_VM behaves like fork(2). The child runs only the
    // ioperm system call, one `out` instruction and _exit, all async-signal-safe, on a
    // copy of this stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: child side; ioperm grants access to exactly this port, then `out` writes
        // one byte there. No memory is touched.
        unsafe {
            if libc::ioperm(libc::c_ulong::from(port), 1, 1) != 0 {
                libc::_exit(1);
            }
            std::arch::asm!("out dx, al", in("dx") port, in("al") value,
                options(nomem, nostack, preserves_flags));
            libc::_exit(0);
        }
    }
    Ok(pid as libc::pid_t)
}

/// Not available off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn outb_in_child(_port: u16, _value: u8) -> io::Result<libc::pid_t> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
