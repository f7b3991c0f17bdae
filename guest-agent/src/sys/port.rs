//! Writing one byte to an x86 I/O port from user mode, for guests without /dev/port
//! (it needs PCI or ISA in the kernel).

use std::io;

/// Writes `value` to I/O `port` with `ioperm` + `out`, in a short-lived child process so a
/// hypervisor that faults the instruction costs only that child. Returns the child's pid
/// (the caller's reaper collects it: exit 0 = written).
#[cfg(target_arch = "x86_64")]
pub fn outb_in_child(port: u16, value: u8) -> io::Result<libc::pid_t> {
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        let (port, value) = ((arg as usize >> 8) as u16, arg as usize as u8);
        // SAFETY: ioperm grants access to exactly this port, then `out` writes one byte
        // there; no memory is touched and the child ends in _exit.
        unsafe {
            if libc::ioperm(libc::c_ulong::from(port), 1, 1) != 0 {
                libc::_exit(1);
            }
            std::arch::asm!("out dx, al", in("dx") port, in("al") value,
                options(nomem, nostack, preserves_flags));
            libc::_exit(0)
        }
    }
    let arg = ((port as usize) << 8 | value as usize) as *mut libc::c_void;
    super::spawn::clone_vfork(0, child, arg)
}

/// Not available off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn outb_in_child(_port: u16, _value: u8) -> io::Result<libc::pid_t> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
