//! Boot benchmark: kennel-vmm and qemu (`-M microvm`) boot the same kernel and initramfs in one
//! run. Prints, per VMM: time from process start to the guest's `/init` running (its first console
//! line), to the end of its checks, and the VMM's resident memory excluding guest RAM.
//!
//! Run with `bash scripts/bench` (it builds the guest and exports KENNEL_VMLINUX, KENNEL_TEST_INIT).
//! Figures only; nothing here is asserted.

use kennel_tests::{guest, procfs};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 128;
const INIT_LINE: &str = "kennel-test-init: started as pid 1";
const DONE_LINE: &str = "kennel-test-init: all checks passed";

struct Sample {
    to_init: Option<Duration>,
    to_done: Option<Duration>,
    own_rss_kib: u64,
    own_pss_kib: u64,
    guest_rss_kib: u64,
}

fn boot(mut cmd: Command) -> Sample {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("VMM starts");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut sample = Sample {
        to_init: None,
        to_done: None,
        own_rss_kib: 0,
        own_pss_kib: 0,
        guest_rss_kib: 0,
    };
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if sample.to_init.is_none() && line.contains(INIT_LINE) {
            sample.to_init = Some(start.elapsed());
        }
        if line.contains(DONE_LINE) {
            sample.to_done = Some(start.elapsed());
            if let Ok(fp) = procfs::footprint(pid, MEM_MIB << 10) {
                sample.own_rss_kib = fp.own_kib;
                sample.own_pss_kib = fp.own_pss_kib;
                sample.guest_rss_kib = fp.guest_kib;
            }
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    sample
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:8.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "   never".into())
}

fn main() {
    let vmlinux = guest::vmlinux().expect("KENNEL_VMLINUX");
    let init = guest::test_init().expect("KENNEL_TEST_INIT");
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "initrd.cpio", &init);
    let runs: usize = std::env::var("KENNEL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let profile = vmm::profile::Profile::Auto.resolve();
    let append = profile.kernel_args().join(" ");

    println!(
        "boot benchmark: {} MiB guest, 1 vCPU, {profile:?} profile, {runs} run(s) each",
        MEM_MIB
    );
    println!("kernel {}", vmlinux.display());
    println!(
        "{:<12} {:>10} {:>11} {:>14} {:>14} {:>12}",
        "vmm", "to /init", "to checks", "own RSS (KiB)", "own PSS (KiB)", "guest RSS"
    );
    let mut best = [f64::MAX, f64::MAX];
    for _ in 0..runs {
        let mut kennel = Command::new(guest::workspace_bin("kennel-vmm"));
        kennel
            .args([
                "run",
                "--console",
                "stdout",
                "--mem",
                &MEM_MIB.to_string(),
                "--kernel",
            ])
            .arg(&vmlinux)
            .arg("--initrd")
            .arg(&initrd);
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            &MEM_MIB.to_string(),
            "-nodefaults",
            "-no-reboot",
            "-nographic",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(&vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &append]);
        for (i, (name, cmd)) in [("kennel-vmm", kennel), ("qemu", qemu)]
            .into_iter()
            .enumerate()
        {
            let s = boot(cmd);
            if let Some(t) = s.to_init {
                best[i] = best[i].min(t.as_secs_f64());
            }
            println!(
                "{:<12} {} {} {:>14} {:>14} {:>9} KiB",
                name,
                secs(s.to_init),
                secs(s.to_done),
                s.own_rss_kib,
                s.own_pss_kib,
                s.guest_rss_kib
            );
        }
    }
    if best[0] < f64::MAX && best[1] < f64::MAX {
        println!(
            "ratio qemu/kennel-vmm to /init (best runs): {:.2}x",
            best[1] / best[0]
        );
    }
}
