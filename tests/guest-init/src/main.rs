//! A tiny static `/init` for boot tests: it makes real system calls (mount, read, fork, exec,
//! wait, mmap of /dev/mem for the boot marker, reboot) and reports each step on the console.

use std::ffi::CString;
use std::io::Write;

const MARKER_ADDR: libc::off_t = 0xd000_0000;
const MARK_INIT: u8 = 1;
const CHILD_EXIT: i32 = 7;

pub(crate) fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "kennel-test-init: {msg}");
    let _ = out.flush();
}

pub(crate) fn mount(src: &str, target: &str, fstype: &str) -> Result<(), String> {
    let (s, t, f) = (cstr(src), cstr(target), cstr(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in literal strings")
}

pub(crate) fn mark(value: u8) -> Result<(), String> {
    let path = cstr("/dev/mem");
    // SAFETY: plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_SYNC) };
    if fd < 0 {
        return Err(format!(
            "open /dev/mem: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: maps one page of device memory; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            MARKER_ADDR,
        )
    };
    // SAFETY: fd was opened above and is not used after this.
    unsafe { libc::close(fd) };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap marker: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `p` is a live, writable one-page mapping; the write goes to the VMM's marker device.
    unsafe {
        std::ptr::write_volatile(p as *mut u8, value);
        libc::munmap(p, 4096);
    }
    Ok(())
}

fn fork_exec_wait() -> Result<i32, String> {
    // SAFETY: single-threaded program; the child only calls async-signal-safe execv/_exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let prog = cstr("/init");
        let arg1 = cstr("child");
        let argv = [prog.as_ptr(), arg1.as_ptr(), std::ptr::null()];
        // SAFETY: argv is a NULL-terminated array of valid C strings.
        unsafe {
            libc::execv(prog.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child created above; status is a valid out pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) {
        return Err(format!("child did not exit normally (status {status:#x})"));
    }
    Ok(libc::WEXITSTATUS(status))
}

fn checks() -> Result<(), String> {
    mount("proc", "/proc", "proc")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    mount("sysfs", "/sys", "sysfs")?;
    mark(MARK_INIT)?;
    say("marker written");
    let uptime =
        std::fs::read_to_string("/proc/uptime").map_err(|e| format!("read /proc/uptime: {e}"))?;
    say(&format!("uptime {}", uptime.trim()));
    let code = fork_exec_wait()?;
    if code != CHILD_EXIT {
        return Err(format!("child exited with {code}, expected {CHILD_EXIT}"));
    }
    say(&format!("child exited with {code}"));
    vector_state_check()?;
    Ok(())
}

/// On a `syscall_trap` (compat) host the kernel runs without XSAVE and saves only x87/SSE state
/// (FXSAVE) on a context switch, while user code runs natively and reads the host's CPUID and
/// XCR0, so it sees AVX usable: a preempted AVX loop resumes with another process's upper register
/// halves. kennel-vmm therefore gives init glibc tunables that turn glibc's AVX string functions
/// off (kennel-agent passes them on to containers); check that they arrived.
fn vector_state_check() -> Result<(), String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let avx = std::arch::is_x86_feature_detected!("avx");
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    say(&format!(
        "user mode sees avx {avx}; GLIBC_TUNABLES {tunables:?}"
    ));
    let compat = cmdline.split_whitespace().any(|a| a == "noxsave");
    if compat && avx && !tunables.contains("-AVX2") {
        return Err("AVX is usable in user mode, the kernel runs with noxsave, and glibc's AVX functions are not turned off".into());
    }
    Ok(())
}

mod bench;
mod devices;
mod net;
mod template;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("child") {
        // SAFETY: getpid/getppid have no preconditions.
        let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
        say(&format!("child pid {pid} of parent {ppid} after exec"));
        std::process::exit(CHILD_EXIT);
    }
    // SAFETY: getpid has no preconditions.
    say(&format!("started as pid {}", unsafe { libc::getpid() }));
    let result = checks().and_then(|()| {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if cmdline
            .split_whitespace()
            .any(|a| a == "kennel.test=devices")
        {
            devices::checks()
        } else if cmdline.split_whitespace().any(|a| a == "kennel.test=net") {
            net::checks()
        } else if cmdline
            .split_whitespace()
            .any(|a| a == "kennel.test=template")
        {
            template::serve()
        } else if cmdline.split_whitespace().any(|a| a == "kennel.test=bench") {
            bench::run()
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => say("all checks passed"),
        Err(e) => say(&format!("FAILED: {e}")),
    }
    // SAFETY: sync and reboot take no pointers; reboot ends the VM through the i8042 reset.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    say("FAILED: reboot returned");
}
