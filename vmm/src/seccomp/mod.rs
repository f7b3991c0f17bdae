//! Seccomp BPF filters per kind of VMM thread (as Firecracker: a vCPU, API and VMM filter,
//! installed before guest code runs), compiled with rust-vmm's `seccompiler`.
//!
//! Each thread installs its kind's filter when it starts ([`install`]); the vCPU threads do so
//! after their KVM setup and before the first `KVM_RUN`. Filters are inherited by threads a
//! thread starts and can only be narrowed, so the lists in [`rules`] give a thread that starts
//! others what those need (see the README for the map of threads). A call outside the filter
//! kills the whole process (`SECCOMP_RET_KILL_PROCESS`), which the kernel's audit log records
//! with the syscall number. [`set_policy`] chooses that, logging only (`SECCOMP_RET_LOG`, to
//! find a missing rule), or no filtering; the library default is no filtering, the
//! `kennel-vmm` binary turns it on unless `--no-seccomp` is given.

pub mod ioctls;
pub mod rules;

use rules::{Op, RuleSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules do not compile to BPF.
    #[error("cannot compile the {kind} seccomp filter")]
    Compile {
        /// Thread kind.
        kind: ThreadKind,
        /// Cause.
        #[source]
        source: seccompiler::Error,
    },
    /// The kernel refused the filter (or `PR_SET_NO_NEW_PRIVS`).
    #[error("cannot install the {kind} seccomp filter")]
    Install {
        /// Thread kind.
        kind: ThreadKind,
        /// Cause.
        #[source]
        source: seccompiler::Error,
    },
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set PR_SET_NO_NEW_PRIVS")]
    NoNewPrivs(#[source] std::io::Error),
    /// The thread running a filtered closure could not be started or panicked.
    #[error("the {0} thread failed")]
    Thread(ThreadKind),
}

impl SeccompError {
    /// The error with its causes, `: `-separated (for a log line or a stop reason).
    pub fn chain(&self) -> String {
        let mut msg = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(s) = cur {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            cur = s.source();
        }
        msg
    }
}

/// The kinds of VMM thread, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThreadKind {
    /// A vCPU thread (and the device workers it starts).
    Vcpu,
    /// The thread that restarts a restored VM's device workers (what device activation needs).
    Activate,
    /// A virtio-blk worker.
    Block,
    /// A virtio-net worker.
    Net,
    /// A virtio-vsock worker.
    Vsock,
    /// The control API listener and its connection threads.
    Api,
    /// The main thread once the VM runs.
    Main,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 7] = [
        ThreadKind::Vcpu,
        ThreadKind::Activate,
        ThreadKind::Block,
        ThreadKind::Net,
        ThreadKind::Vsock,
        ThreadKind::Api,
        ThreadKind::Main,
    ];

    /// The kind's name (`vcpu`, `api`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Activate => "activate",
            ThreadKind::Block => "virtio-blk",
            ThreadKind::Net => "virtio-net",
            ThreadKind::Vsock => "virtio-vsock",
            ThreadKind::Api => "api",
            ThreadKind::Main => "main",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<ThreadKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The syscalls this kind may make.
    pub fn rules(self) -> RuleSet {
        match self {
            ThreadKind::Vcpu => rules::vcpu(),
            ThreadKind::Activate => rules::activate(),
            ThreadKind::Block => rules::block(),
            ThreadKind::Net => rules::net(),
            ThreadKind::Vsock => rules::vsock(),
            ThreadKind::Api => rules::api(),
            ThreadKind::Main => rules::main_thread(),
        }
    }

    /// Whether threads of this kind start other threads (and so need `clone3` answered ENOSYS).
    fn spawns_threads(self) -> bool {
        self.rules().has(libc::SYS_clone)
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a filter does with a call outside its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No filter is installed.
    Off,
    /// The process is killed (`SECCOMP_RET_KILL_PROCESS`; the default of `kennel-vmm`).
    Kill,
    /// The call is allowed and logged by the kernel (`SECCOMP_RET_LOG`), to find missing rules.
    Log,
}

static POLICY: AtomicU8 = AtomicU8::new(0);

/// Sets the policy for every filter installed from now on (call before building the VM).
pub fn set_policy(policy: Policy) {
    let v = match policy {
        Policy::Off => 0,
        Policy::Kill => 1,
        Policy::Log => 2,
    };
    POLICY.store(v, Ordering::SeqCst);
}

/// The policy in force.
pub fn policy() -> Policy {
    match POLICY.load(Ordering::SeqCst) {
        1 => Policy::Kill,
        2 => Policy::Log,
        _ => Policy::Off,
    }
}

fn mismatch_action(policy: Policy) -> SeccompAction {
    match policy {
        Policy::Log => SeccompAction::Log,
        Policy::Kill | Policy::Off => SeccompAction::KillProcess,
    }
}

fn condition(kind: ThreadKind, c: &rules::Cond) -> Result<SeccompCondition, SeccompError> {
    let op = match c.op {
        Op::Eq => SeccompCmpOp::Eq,
        Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
    };
    SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, op, c.value)
        .map_err(|e| compile_err(kind, e.into()))
}

fn compile_err(kind: ThreadKind, source: seccompiler::Error) -> SeccompError {
    SeccompError::Compile { kind, source }
}

/// Compiles `kind`'s filter for x86_64, with `policy`'s action for calls outside the rules.
pub fn compile(kind: ThreadKind, policy: Policy) -> Result<BpfProgram, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in kind.rules().allowed {
        let mut rules = Vec::new();
        for alt in &a.when {
            let conds = alt
                .iter()
                .map(|c| condition(kind, c))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(SeccompRule::new(conds).map_err(|e| compile_err(kind, e.into()))?);
        }
        map.insert(a.nr, rules);
    }
    let filter = SeccompFilter::new(
        map,
        mismatch_action(policy),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| compile_err(kind, e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| compile_err(kind, e.into()))
}

/// The filter in front of a thread-starting kind's own: `clone3` gets ENOSYS, so glibc uses
/// `clone`, whose flags the kind's filter checks (a `clone3` argument is a pointer, which a
/// filter cannot read).
pub fn clone3_enosys() -> Result<BpfProgram, SeccompError> {
    let mut map = BTreeMap::new();
    map.insert(libc::SYS_clone3, vec![]);
    let filter = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| compile_err(ThreadKind::Vcpu, e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| compile_err(ThreadKind::Vcpu, e.into()))
}

/// The programs [`install`] loads for `kind`, in order.
pub fn programs(kind: ThreadKind, policy: Policy) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut out = Vec::new();
    if kind.spawns_threads() {
        out.push(clone3_enosys()?);
    }
    out.push(compile(kind, policy)?);
    Ok(out)
}

/// Sets `PR_SET_NO_NEW_PRIVS` for the calling thread (inherited by threads it starts and kept
/// across `execve`): nothing this process runs can gain privileges through set-uid files.
pub fn no_new_privs() -> Result<(), SeccompError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(SeccompError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Loads already compiled `programs` into the calling thread (no allocation: safe to call in a
/// child after `fork`).
pub fn apply(kind: ThreadKind, programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|source| SeccompError::Install { kind, source })?;
    }
    Ok(())
}

/// Installs `kind`'s filter on the calling thread, under the current [`policy`] (nothing when
/// it is off).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    let policy = policy();
    if policy == Policy::Off {
        return Ok(());
    }
    let programs = programs(kind, policy)?;
    apply(kind, &programs)?;
    tracing::debug!("seccomp: {kind} filter installed on this thread");
    Ok(())
}

/// Runs `f` on a new thread that first installs `kind`'s filter, and waits for it; threads
/// `f` starts inherit the filter. With the policy off, `f` runs on the calling thread.
pub fn run_filtered<T: Send>(
    kind: ThreadKind,
    f: impl FnOnce() -> T + Send,
) -> Result<T, SeccompError> {
    if policy() == Policy::Off {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(kind.name().into())
            .spawn_scoped(s, move || install(kind).map(|()| f()))
            .map_err(|_| SeccompError::Thread(kind))?;
        handle.join().map_err(|_| SeccompError::Thread(kind))?
    })
}

/// A readable listing of `kind`'s rules (what `kennel-vmm seccomp print` shows).
pub fn describe(kind: ThreadKind) -> String {
    let rules = kind.rules();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {kind}: {} syscalls allowed, anything else kills the process",
        rules.allowed.len()
    );
    if kind.spawns_threads() {
        let _ = writeln!(
            out,
            "# clone3 returns ENOSYS (a filter in front of this one)"
        );
    }
    let mut allowed = rules.allowed;
    allowed.sort_by_key(|a| a.name);
    for a in allowed {
        if a.when.is_empty() {
            let _ = writeln!(out, "{}", a.name);
            continue;
        }
        let alts: Vec<String> = a
            .when
            .iter()
            .map(|alt| {
                alt.iter()
                    .map(|c| match c.op {
                        Op::Eq => format!("arg{} == {:#x} ({})", c.arg, c.value, c.what),
                        Op::MaskedEq(m) => {
                            format!("arg{} & {m:#x} == {:#x} ({})", c.arg, c.value, c.what)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" && ")
            })
            .collect();
        let _ = writeln!(out, "{} if {}", a.name, alts.join("\n    or "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles_for_x86_64() {
        for kind in ThreadKind::ALL {
            for policy in [Policy::Kill, Policy::Log] {
                let progs = programs(kind, policy).unwrap();
                let main = progs.last().unwrap();
                assert!(!main.is_empty(), "{kind}");
                // A classic BPF program holds at most 4096 instructions.
                assert!(main.len() < 4096, "{kind}: {} instructions", main.len());
            }
        }
    }

    #[test]
    fn kill_and_log_differ_only_in_the_default_action() {
        let kill = compile(ThreadKind::Net, Policy::Kill).unwrap();
        let log = compile(ThreadKind::Net, Policy::Log).unwrap();
        assert_eq!(kill.len(), log.len());
        let k: Vec<u32> = kill.iter().map(|i| i.k).collect();
        assert!(k.contains(&libc::SECCOMP_RET_KILL_PROCESS));
        assert!(!k.contains(&libc::SECCOMP_RET_LOG));
        assert!(log.iter().any(|i| i.k == libc::SECCOMP_RET_LOG));
    }

    #[test]
    fn names_round_trip_and_listing_shows_conditions() {
        for kind in ThreadKind::ALL {
            assert_eq!(ThreadKind::from_name(kind.name()), Some(kind));
        }
        let text = describe(ThreadKind::Vcpu);
        assert!(text.contains("KVM_RUN"), "{text}");
        assert!(text.contains("PROT_EXEC"), "{text}");
        assert!(text.contains("clone3 returns ENOSYS"), "{text}");
        assert!(!describe(ThreadKind::Block).contains("clone3"));
    }

    #[test]
    fn policy_defaults_to_off_in_the_library() {
        // Other tests in this binary never set it.
        assert_eq!(policy(), Policy::Off);
        assert_eq!(run_filtered(ThreadKind::Vcpu, || 7).unwrap(), 7);
    }
}
