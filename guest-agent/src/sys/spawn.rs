//! Process creation with `clone(2)`: new namespaces, a fixed fd layout, then `execve`.
//!
//! The child runs only async-signal-safe code (`dup2`, `execve`, `_exit`) because the agent
//! is multi-threaded: everything it needs is prepared in the parent before the clone.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What to run in the new process.
pub struct SpawnSpec<'a> {
    /// Namespace flags for `clone` (e.g. `CLONE_NEWPID | CLONE_NEWNS`), or `0`.
    pub clone_flags: libc::c_int,
    /// Program to execute (absolute path).
    pub program: &'a CString,
    /// Full argv, argv[0] included.
    pub argv: &'a [CString],
    /// Environment `KEY=VALUE` entries.
    pub env: &'a [CString],
    /// `(source fd, target fd number)`: the child gets `source` as `target`; every other
    /// descriptor of the agent is close-on-exec and disappears at `execve`.
    pub fds: &'a [(RawFd, RawFd)],
}

/// Clones a child with `spec.clone_flags`, maps its descriptors and executes the program.
/// Returns the child's pid; the caller's reaper collects its exit status.
pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<libc::pid_t> {
    // Duplicate every source above the highest target so the child's dup2 calls never
    // overwrite a source that a later mapping still needs.
    let mut high: Vec<OwnedFd> = Vec::with_capacity(spec.fds.len());
    for &(src, _) in spec.fds {
        // SAFETY: F_DUPFD_CLOEXEC on a caller-provided descriptor; the result is checked
        // and owned by `high`, which closes it when this function returns.
        let fd = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by fcntl and is owned by nobody else.
        high.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pairs: Vec<(RawFd, RawFd)> = high
        .iter()
        .zip(spec.fds)
        .map(|(h, &(_, target))| (h.as_raw_fd(), target))
        .collect();
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let args = ChildArgs {
        pairs: pairs.as_ptr(),
        npairs: pairs.len(),
        program: spec.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    let pid = clone_vfork(
        spec.clone_flags,
        exec_child,
        &args as *const ChildArgs as *mut _,
    )?;
    drop(high);
    Ok(pid)
}

/// What the vfork-style child needs, prepared by the parent (the child shares its memory).
struct ChildArgs {
    pairs: *const (RawFd, RawFd),
    npairs: usize,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

extern "C" fn exec_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's ChildArgs, alive because the parent is suspended
    // (CLONE_VFORK) until this child calls execve or exits. Only async-signal-safe calls
    // follow, and nothing in the shared memory is written.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        for i in 0..a.npairs {
            let (src, target) = *a.pairs.add(i);
            if libc::dup2(src, target) < 0 {
                libc::_exit(126);
            }
        }
        libc::execve(a.program, a.argv, a.envp);
        libc::_exit(127)
    }
}

/// `clone(CLONE_VM | CLONE_VFORK | flags)` running `child(arg)` on a private stack, like
/// posix_spawn: no page tables are copied, which matters for a large multi-threaded agent
/// (and a lot under an emulating hypervisor). Signals are blocked around the clone and the
/// child resets every handler to the default before restoring the mask, so no handler of
/// the agent ever runs on the child's stack. `child` must only call async-signal-safe
/// functions and end in execve or _exit.
pub fn clone_vfork(
    flags: libc::c_int,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    struct Trampoline {
        child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
        old_mask: libc::sigset_t,
    }
    extern "C" fn trampoline(t: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `t` is the parent's Trampoline, alive while the parent is suspended by
        // CLONE_VFORK. Without CLONE_SIGHAND the child's handler table is its own copy, so
        // resetting it does not affect the agent.
        unsafe {
            let t = &*(t as *const Trampoline);
            for sig in 1..libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &t.old_mask, std::ptr::null_mut());
            (t.child)(t.arg)
        }
    }
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: sigset manipulation on local storage; the old mask is restored below.
    let mut t = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        Trampoline {
            child,
            arg,
            old_mask: old,
        }
    };
    // The stack grows down: pass its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let clone_flags = flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: `top` is the aligned end of a live 64 KiB buffer used only by the child,
    // which runs `trampoline` (async-signal-safe only) and ends in execve or _exit before
    // this thread resumes (CLONE_VFORK), so `stack` and `t` outlive its use of them.
    let pid = unsafe {
        libc::clone(
            trampoline,
            top as *mut libc::c_void,
            clone_flags,
            &mut t as *mut Trampoline as *mut libc::c_void,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: restores this thread's signal mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &t.old_mask, std::ptr::null_mut());
    }
    drop(stack);
    if pid < 0 {
        return Err(err);
    }
    Ok(pid)
}

/// Clones a plain child (fork semantics) that becomes a child of this process's parent
/// (`CLONE_PARENT`). Returns 0 in the child and the child's pid in the caller. Only for
/// single-threaded callers (the container helpers), where the child may run normal code.
pub fn fork_sibling() -> io::Result<libc::pid_t> {
    // SAFETY: the helper processes that call this are single-threaded, so the child is an
    // exact copy of a single-threaded process and may continue running normal Rust code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// Sets or clears close-on-exec on `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only change descriptor flags; errors are checked.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes ownership of a descriptor number inherited from the parent (helpers only).
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and, by the helper protocol, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unblocks every signal and resets dispositions to default (helpers start from a clean slate).
pub fn reset_signals() {
    // SAFETY: plain libc calls on local, initialised sigset storage.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Points stdout and stderr at `target` (PID 1 logging to the console).
pub fn redirect_stdio(target: &std::fs::File) {
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors; `target` stays open for the call.
        unsafe {
            libc::dup2(target.as_raw_fd(), fd);
        }
    }
}
