//! What each kind of thread may call: syscall names, and argument conditions where the
//! argument decides what the call does (ioctl numbers, socket families, mapping protections,
//! clone flags, prctl options).
//!
//! The lists come from `strace -f` of every mode (cold boot, restore, template build, each
//! control API operation, vsock connections both ways, tap I/O, disk I/O); see the README.
//! A thread inherits its creator's filter and can only add to it, so a thread that starts
//! others (vCPU threads start the device workers when the guest driver activates a device) is
//! allowed what those will need.

use super::ioctls;

/// One comparison on one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index (0-5).
    pub arg: u8,
    /// Comparison.
    pub op: Op,
    /// Value compared with.
    pub value: u64,
    /// What the value means (shown by `kennel-vmm seccomp print`).
    pub what: &'static str,
}

/// How an argument is compared (as 32-bit values: every argument checked here is an `int`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// A syscall that is allowed, always or when one of `when` holds (each an AND of conditions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Syscall name.
    pub name: &'static str,
    /// Syscall number (x86_64).
    pub nr: i64,
    /// Alternatives; empty means any arguments.
    pub when: Vec<Vec<Cond>>,
}

/// A set of allowed syscalls under construction.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    /// The syscalls, in insertion order.
    pub allowed: Vec<Allowed>,
}

macro_rules! sys {
    ($name:ident) => {
        (stringify!($name), sys_nr::$name)
    };
}

/// Syscall numbers by name (the `libc::SYS_*` constants under their plain names).
#[allow(non_upper_case_globals)]
mod sys_nr {
    pub use libc::{
        SYS_accept4 as accept4, SYS_brk as brk, SYS_clock_gettime as clock_gettime,
        SYS_clock_nanosleep as clock_nanosleep, SYS_clone as clone, SYS_clone3 as clone3,
        SYS_close as close, SYS_connect as connect, SYS_epoll_create1 as epoll_create1,
        SYS_epoll_ctl as epoll_ctl, SYS_epoll_pwait as epoll_pwait, SYS_epoll_wait as epoll_wait,
        SYS_eventfd2 as eventfd2, SYS_exit as exit, SYS_exit_group as exit_group,
        SYS_fcntl as fcntl, SYS_fdatasync as fdatasync, SYS_flock as flock, SYS_fstat as fstat,
        SYS_fsync as fsync, SYS_ftruncate as ftruncate, SYS_futex as futex,
        SYS_getdents64 as getdents64, SYS_getpid as getpid, SYS_getrandom as getrandom,
        SYS_gettid as gettid, SYS_ioctl as ioctl, SYS_lseek as lseek, SYS_madvise as madvise,
        SYS_mkdir as mkdir, SYS_mmap as mmap, SYS_mprotect as mprotect, SYS_munmap as munmap,
        SYS_nanosleep as nanosleep, SYS_newfstatat as newfstatat, SYS_openat as openat,
        SYS_poll as poll, SYS_ppoll as ppoll, SYS_prctl as prctl, SYS_pread64 as pread64,
        SYS_preadv as preadv, SYS_pwrite64 as pwrite64, SYS_pwritev as pwritev, SYS_read as read,
        SYS_readv as readv, SYS_recvfrom as recvfrom, SYS_rename as rename,
        SYS_renameat as renameat, SYS_renameat2 as renameat2, SYS_rseq as rseq,
        SYS_rt_sigaction as rt_sigaction, SYS_rt_sigprocmask as rt_sigprocmask,
        SYS_rt_sigreturn as rt_sigreturn, SYS_sched_getaffinity as sched_getaffinity,
        SYS_sched_yield as sched_yield, SYS_seccomp as seccomp, SYS_sendto as sendto,
        SYS_set_robust_list as set_robust_list, SYS_shutdown as shutdown,
        SYS_sigaltstack as sigaltstack, SYS_socket as socket, SYS_statx as statx,
        SYS_tgkill as tgkill, SYS_unlink as unlink, SYS_unlinkat as unlinkat, SYS_write as write,
        SYS_writev as writev,
    };
}

impl RuleSet {
    /// Allows `(name, nr)` with any arguments.
    pub fn allow(&mut self, (name, nr): (&'static str, i64)) -> &mut Self {
        match self.allowed.iter_mut().find(|a| a.nr == nr) {
            // Unconditional wins over any conditions added before.
            Some(a) => a.when.clear(),
            None => self.allowed.push(Allowed {
                name,
                nr,
                when: vec![],
            }),
        }
        self
    }

    /// Allows `(name, nr)` when all of `conds` hold (added as one more alternative).
    pub fn allow_if(&mut self, (name, nr): (&'static str, i64), conds: Vec<Cond>) -> &mut Self {
        match self.allowed.iter_mut().find(|a| a.nr == nr) {
            Some(a) if a.when.is_empty() => {}
            Some(a) => {
                if !a.when.contains(&conds) {
                    a.when.push(conds);
                }
            }
            None => self.allowed.push(Allowed {
                name,
                nr,
                when: vec![conds],
            }),
        }
        self
    }

    /// Allows every syscall and alternative of `other` too.
    pub fn extend(&mut self, other: &RuleSet) -> &mut Self {
        for a in &other.allowed {
            if a.when.is_empty() {
                self.allow((a.name, a.nr));
            } else {
                for c in &a.when {
                    self.allow_if((a.name, a.nr), c.clone());
                }
            }
        }
        self
    }

    /// Whether `nr` is allowed at all (with or without conditions).
    pub fn has(&self, nr: i64) -> bool {
        self.allowed.iter().any(|a| a.nr == nr)
    }
}

fn eq(arg: u8, value: u64, what: &'static str) -> Cond {
    Cond {
        arg,
        op: Op::Eq,
        value,
        what,
    }
}

fn ioctl(rules: &mut RuleSet, list: &[(u64, &'static str)]) {
    for &(nr, what) in list {
        rules.allow_if(sys!(ioctl), vec![eq(1, nr, what)]);
    }
}

/// What every thread does: memory, locks, time, logging to stderr, its own exit.
pub fn common() -> RuleSet {
    let mut r = RuleSet::default();
    for s in [
        sys!(read),
        sys!(write),
        sys!(writev),
        sys!(close),
        sys!(futex),
        sys!(clock_gettime),
        sys!(clock_nanosleep),
        sys!(nanosleep),
        sys!(sched_yield),
        sys!(getrandom),
        sys!(brk),
        sys!(munmap),
        sys!(madvise),
        sys!(rt_sigprocmask),
        sys!(rt_sigreturn),
        sys!(sigaltstack),
        sys!(gettid),
        sys!(getpid),
        sys!(exit),
        sys!(exit_group),
    ] {
        r.allow(s);
    }
    // Memory is never made executable: no new code can be mapped into the VMM.
    let no_exec = Cond {
        arg: 2,
        op: Op::MaskedEq(libc::PROT_EXEC as u64),
        value: 0,
        what: "prot without PROT_EXEC",
    };
    r.allow_if(sys!(mmap), vec![no_exec]);
    r.allow_if(sys!(mprotect), vec![no_exec]);
    // std checks a descriptor is still open before closing it.
    r.allow_if(sys!(fcntl), vec![eq(1, libc::F_GETFD as u64, "F_GETFD")]);
    r
}

/// What starting a thread takes: `clone` with exactly the flags of `pthread_create` (no new
/// process can be forked), `clone3` (answered ENOSYS by a filter in front, so glibc falls back
/// to `clone`, whose flags can be checked), and what the new thread runs before its own code.
pub fn spawn_threads() -> RuleSet {
    let mut r = RuleSet::default();
    r.allow_if(
        sys!(clone),
        vec![eq(0, PTHREAD_CLONE_FLAGS, "pthread_create flags")],
    );
    r.allow(sys!(clone3));
    r.allow(sys!(set_robust_list));
    r.allow(sys!(rseq));
    r.allow(sys!(sched_getaffinity));
    r.allow_if(
        sys!(prctl),
        vec![eq(0, libc::PR_SET_NAME as u64, "PR_SET_NAME")],
    );
    // A started thread narrows its inherited filter with its own kind's.
    r.allow_if(
        sys!(prctl),
        vec![eq(
            0,
            libc::PR_SET_NO_NEW_PRIVS as u64,
            "PR_SET_NO_NEW_PRIVS",
        )],
    );
    r.allow_if(
        sys!(seccomp),
        vec![eq(
            0,
            libc::SECCOMP_SET_MODE_FILTER as u64,
            "SECCOMP_SET_MODE_FILTER",
        )],
    );
    r
}

/// `clone` flags glibc's `pthread_create` passes.
pub const PTHREAD_CLONE_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// A virtio-blk worker: waits on its queue's eventfd, reads and writes the backing file at
/// offsets, flushes it, signals the irqfd.
pub fn block() -> RuleSet {
    let mut r = common();
    for s in [
        sys!(poll),
        sys!(ppoll),
        sys!(pread64),
        sys!(pwrite64),
        sys!(preadv),
        sys!(pwritev),
        sys!(lseek),
        sys!(fsync),
        sys!(fdatasync),
        sys!(flock),
        sys!(fstat),
        // Seen in the boot test's log-mode run (read-write disk): the backing file is reopened.
        sys!(openat),
    ] {
        r.allow(s);
    }
    r
}

/// A virtio-net worker: epoll over the queue eventfds and the tap; frames read and written on
/// the tap.
pub fn net() -> RuleSet {
    let mut r = common();
    for s in [
        sys!(epoll_wait),
        sys!(epoll_pwait),
        sys!(epoll_ctl),
        sys!(readv),
    ] {
        r.allow(s);
    }
    r
}

/// A virtio-vsock worker: epoll over the queues, the hybrid listener and its connections;
/// accepts host connections, connects guest-initiated ones to `<socket>_<port>` (Unix sockets
/// only).
pub fn vsock() -> RuleSet {
    let mut r = common();
    for s in [
        sys!(epoll_wait),
        sys!(epoll_pwait),
        sys!(epoll_ctl),
        sys!(accept4),
        sys!(connect),
        sys!(shutdown),
        sys!(recvfrom),
        sys!(sendto),
        sys!(readv),
    ] {
        r.allow(s);
    }
    unix_sockets(&mut r);
    ioctl(&mut r, &[(libc::FIONBIO, "FIONBIO")]);
    r.allow_if(sys!(fcntl), vec![eq(1, libc::F_GETFL as u64, "F_GETFL")]);
    r.allow_if(sys!(fcntl), vec![eq(1, libc::F_SETFL as u64, "F_SETFL")]);
    r
}

fn unix_sockets(r: &mut RuleSet) {
    r.allow_if(sys!(socket), vec![eq(0, libc::AF_UNIX as u64, "AF_UNIX")]);
}

/// What activating a device takes (on the vCPU thread that writes DRIVER_OK, or on the thread
/// that restarts the devices of a restored VM): setting the tap's offloads, the worker's epoll
/// set, starting the worker, and everything the worker itself does (it inherits this filter).
pub fn activate() -> RuleSet {
    let mut r = common();
    r.extend(&spawn_threads())
        .extend(&block())
        .extend(&net())
        .extend(&vsock());
    r.allow(sys!(epoll_create1));
    r.allow(sys!(eventfd2));
    // Workers get their own copies of eventfds and files.
    r.allow_if(
        sys!(fcntl),
        vec![eq(1, libc::F_DUPFD_CLOEXEC as u64, "F_DUPFD_CLOEXEC")],
    );
    ioctl(&mut r, &[(ioctls::TUNSETOFFLOAD, "TUNSETOFFLOAD")]);
    r
}

/// A vCPU thread: KVM_RUN and the reads of its own state for a snapshot; device emulation
/// (serial output, reset, markers, MMIO transports); device activation.
pub fn vcpu() -> RuleSet {
    let mut r = activate();
    ioctl(&mut r, &ioctls::vcpu());
    // pause kicks: the kick signal's handler is installed before the vCPUs start.
    r
}

/// The control API threads (listener and one per connection): socket I/O; attach/detach of
/// disk images (open, lock, size); pause (kick signals to the vCPU threads); snapshot (the
/// VM's irqchip, PIT and clock; files written atomically in the target directory).
pub fn api() -> RuleSet {
    let mut r = common();
    r.extend(&spawn_threads());
    for s in [
        sys!(accept4),
        sys!(recvfrom),
        sys!(sendto),
        sys!(shutdown),
        sys!(tgkill),
        sys!(openat),
        sys!(statx),
        sys!(newfstatat),
        sys!(fstat),
        sys!(lseek),
        sys!(flock),
        sys!(fsync),
        sys!(fdatasync),
        sys!(ftruncate),
        sys!(pwrite64),
        sys!(mkdir),
        sys!(rename),
        sys!(renameat),
        sys!(renameat2),
        sys!(unlink),
        sys!(unlinkat),
        sys!(getdents64),
        sys!(poll),
    ] {
        r.allow(s);
    }
    r.allow_if(
        sys!(fcntl),
        vec![eq(1, libc::F_DUPFD_CLOEXEC as u64, "F_DUPFD_CLOEXEC")],
    );
    r.allow_if(sys!(fcntl), vec![eq(1, libc::F_GETFL as u64, "F_GETFL")]);
    ioctl(&mut r, &ioctls::vm_snapshot());
    ioctl(&mut r, &[(ioctls::BLKGETSIZE64, "BLKGETSIZE64")]);
    r
}

/// The main thread once the VM runs: waits for the stop, flushes the console, exits (unmapping
/// guest memory and closing descriptors on the way).
pub fn main_thread() -> RuleSet {
    let mut r = common();
    r.allow(sys!(unlink));
    r.allow(sys!(rt_sigaction));
    r.allow(sys!(fsync));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconditional_beats_conditions_either_order() {
        let mut r = RuleSet::default();
        r.allow_if(sys!(ioctl), vec![eq(1, 1, "one")]);
        r.allow(sys!(ioctl));
        assert!(r.allowed[0].when.is_empty());
        r.allow_if(sys!(ioctl), vec![eq(1, 2, "two")]);
        assert!(r.allowed[0].when.is_empty());
    }

    #[test]
    fn alternatives_are_kept_once() {
        let mut r = RuleSet::default();
        r.allow_if(sys!(ioctl), vec![eq(1, 1, "one")]);
        r.allow_if(sys!(ioctl), vec![eq(1, 1, "one")]);
        r.allow_if(sys!(ioctl), vec![eq(1, 2, "two")]);
        assert_eq!(r.allowed.len(), 1);
        assert_eq!(r.allowed[0].when.len(), 2);
    }

    #[test]
    fn workers_never_exec_fork_or_open_raw_sockets() {
        for r in [vcpu(), block(), net(), vsock(), api(), main_thread()] {
            assert!(!r.has(libc::SYS_execve));
            assert!(!r.has(libc::SYS_fork));
            assert!(!r.has(libc::SYS_ptrace));
            for a in r.allowed.iter().filter(|a| a.nr == libc::SYS_socket) {
                assert_eq!(a.when, vec![vec![eq(0, libc::AF_UNIX as u64, "AF_UNIX")]]);
            }
        }
    }

    #[test]
    fn only_thread_spawners_may_clone() {
        for r in [block(), net(), vsock(), main_thread()] {
            assert!(!r.has(libc::SYS_clone));
        }
        assert!(vcpu().has(libc::SYS_clone) && api().has(libc::SYS_clone));
    }
}
