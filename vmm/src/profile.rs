//! Host profiles: the full CPU on real hardware, or the compatible profile on hosts whose KVM
//! emulates guest supervisor code (nested PVM), where some instructions cannot run in the guest.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which CPU features and kernel arguments the guest gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Detect: compatible when `/sys/module/kvm_pvm` exists, full otherwise.
    Auto,
    /// Everything KVM supports.
    Full,
    /// Mask the features the emulator lacks and trap system calls in the guest kernel.
    Compat,
}

/// Marker of a host whose KVM is the nested PVM flavour.
pub const PVM_MARKER: &str = "/sys/module/kvm_pvm";

/// glibc tunables of the compat profile: no AVX string functions (see `kernel_args`).
pub const COMPAT_GLIBC_TUNABLES: &str =
    "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX_Fast_Unaligned_Load,-AVX512F,-AVX512VL,-ERMS";

/// CPU features hidden from the guest in the compatible profile (Linux `clearcpuid=` names).
pub const COMPAT_CLEARCPUID: &[&str] = &[
    "cx16",
    "popcnt",
    "movbe",
    "rdrand",
    "rdseed",
    "fsgsbase",
    "rdpid",
    "smap",
    "smep",
    "pku",
    "bmi1",
    "bmi2",
    "abm",
    "invpcid",
    "pcid",
    "avx",
    "avx2",
    "avx512f",
    "sha_ni",
    "aes",
    "pclmulqdq",
    "clflushopt",
    "clwb",
    "x2apic",
];

impl Profile {
    /// Resolves `Auto` by looking at the host.
    pub fn resolve(self) -> Profile {
        self.resolve_with(Path::new(PVM_MARKER).exists())
    }

    /// Resolves `Auto` given whether the PVM marker exists.
    pub fn resolve_with(self, pvm_host: bool) -> Profile {
        match self {
            Profile::Auto if pvm_host => Profile::Compat,
            Profile::Auto => Profile::Full,
            p => p,
        }
    }

    /// Kernel arguments every guest gets under this (resolved) profile.
    ///
    /// Compat also sets `GLIBC_TUNABLES` ([`COMPAT_GLIBC_TUNABLES`]) for the guest's init.
    pub fn kernel_args(self) -> Vec<String> {
        let mut args: Vec<String> = [
            "console=ttyS0",
            "reboot=k",
            "panic=-1",
            "tsc=reliable",
            // Time from kvmclock, which KVM restores from a snapshot; the TSC does not survive a
            // restore on every host, and a clock jump makes a periodic-tick guest replay ticks.
            "clocksource=kvm-clock",
            "no_timer_check",
            "i8042.noaux",
            "i8042.nomux",
            "i8042.dumbkbd",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self == Profile::Compat {
            args.push("lpj=2000000".into());
            args.push("noxsave".into());
            args.push(format!("clearcpuid={}", COMPAT_CLEARCPUID.join(",")));
            args.push("syscall_trap".into());
            // Write-protecting kernel text costs ~22 s of emulated page-table work here.
            args.push("rodata=off".into());
            // User code runs natively here and reads the host's CPUID and XCR0, so it sees AVX
            // usable, but the guest kernel (noxsave, no XSAVE emulation) saves only x87/SSE
            // state on a context switch: a preempted AVX loop resumes with another process's
            // upper register halves. glibc's string functions are the common AVX users; the
            // kernel hands `name=value` arguments to init as environment, and kennel-agent
            // passes this one on to every container process.
            args.push(format!("GLIBC_TUNABLES={COMPAT_GLIBC_TUNABLES}"));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_host() {
        assert_eq!(Profile::Auto.resolve_with(true), Profile::Compat);
        assert_eq!(Profile::Auto.resolve_with(false), Profile::Full);
        assert_eq!(Profile::Full.resolve_with(true), Profile::Full);
        assert_eq!(Profile::Compat.resolve_with(false), Profile::Compat);
    }

    #[test]
    fn compat_args_trap_syscalls_and_mask_features() {
        let args = Profile::Compat.kernel_args().join(" ");
        assert!(args.contains("syscall_trap"));
        assert!(args.contains("noxsave"));
        assert!(args.contains("clearcpuid=cx16,popcnt"));
        assert!(args.contains("GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2"));
        let full = Profile::Full.kernel_args().join(" ");
        assert!(!full.contains("syscall_trap"));
        assert!(!full.contains("clearcpuid"));
    }
}
