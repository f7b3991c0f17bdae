//! Template benchmark with kennel-agent as the guest's PID 1: cold boot to agent-ready vs restore
//! to agent-ready (both measured the same way: from spawning kennel-vmm until the agent's vsock
//! listener answers a `CONNECT`), and host memory of N VMs restored from one template vs N
//! cold-booted VMs (RSS and PSS per VM process). Every VM has the pod layout: one empty image
//! slot and one NIC (unplugged: the bench makes no taps).
//!
//! Run with `bash scripts/bench`. Figures only; nothing is asserted.

use kennel_tests::guest;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 128;

fn vmm() -> Command {
    Command::new(guest::workspace_bin("kennel-vmm"))
}

/// Waits until the guest agent answers `CONNECT 1024` on `sock`.
fn ready(sock: &Path, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(mut s) = UnixStream::connect(sock) {
            let _ = s.set_read_timeout(Some(deadline));
            if s.write_all(format!("CONNECT {}\n", agent_proto::DEFAULT_VSOCK_PORT).as_bytes())
                .is_ok()
            {
                let mut line = String::new();
                let mut r = BufReader::new(s);
                if r.read_line(&mut line).is_ok() && line.starts_with("OK ") {
                    return Some(start.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn rollup(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (get("Rss:"), get("Pss:"))
}

struct Vm {
    child: Child,
    sock: PathBuf,
    spawned: Instant,
}

fn spawn_cold(dir: &Path, i: usize, vmlinux: &Path, initrd: &Path) -> Vm {
    let sock = dir.join(format!("cold{i}.sock"));
    let child = vmm()
        .args([
            "run",
            "--mem",
            &MEM_MIB.to_string(),
            "--console",
            "none",
            "--disk",
            "empty,ro",
            "--net",
            "unplugged",
        ])
        .arg("--kernel")
        .arg(vmlinux)
        .arg("--initrd")
        .arg(initrd)
        .arg("--vsock")
        .arg(format!("cid={},socket={}", 100 + i, sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("kennel-vmm");
    Vm {
        child,
        sock,
        spawned: Instant::now(),
    }
}

fn spawn_restore(dir: &Path, i: usize, template: &Path) -> Vm {
    let sock = dir.join(format!("warm{i}.sock"));
    let spawned = Instant::now();
    let child = vmm()
        .arg("restore")
        .arg("--snapshot")
        .arg(template)
        .args(["--console", "none", "--disk", "empty,ro"])
        .arg("--vsock")
        .arg(format!("cid={},socket={}", 200 + i, sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("kennel-vmm");
    Vm {
        child,
        sock,
        spawned,
    }
}

fn memory_table(label: &str, vms: &mut [Vm]) {
    let limit = Duration::from_secs(1800);
    for vm in vms.iter() {
        let left = limit.saturating_sub(vm.spawned.elapsed());
        ready(&vm.sock, left).expect("guest became ready");
    }
    let mut rss = 0;
    let mut pss = 0;
    for vm in vms.iter() {
        let (r, p) = rollup(vm.child.id());
        rss += r;
        pss += p;
    }
    let n = vms.len() as u64;
    println!(
        "{label:<28} {n:>3} VMs   RSS/VM {:>7} KiB   PSS/VM {:>7} KiB   PSS total {:>8} KiB",
        rss / n,
        pss / n,
        pss
    );
    for vm in vms.iter_mut() {
        let _ = vm.child.kill();
        let _ = vm.child.wait();
    }
}

fn main() {
    let vmlinux = guest::vmlinux().expect("KENNEL_VMLINUX");
    let agent = guest::agent().expect("KENNEL_AGENT");
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "agent.cpio", &agent);
    let count: usize = std::env::var("KENNEL_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    let out = vmm()
        .args([
            "template",
            "build",
            "--mem",
            &MEM_MIB.to_string(),
            "--disk",
            "empty,ro",
        ])
        .arg("--kernel")
        .arg(&vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--cache")
        .arg(dir.path().join("templates"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let template = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());

    println!(
        "template benchmark: {MEM_MIB} MiB guest, 1 vCPU, kennel-agent as PID 1; ready = the agent's vsock listener answers"
    );
    let mut cold = spawn_cold(dir.path(), 0, &vmlinux, &initrd);
    let cold_t = ready(&cold.sock, Duration::from_secs(1800)).expect("cold boot ready");
    let _ = cold.child.kill();
    let _ = cold.child.wait();
    let mut restores = Vec::new();
    for i in 0..5 {
        let mut vm = spawn_restore(dir.path(), 1000 + i, &template);
        restores.push(ready(&vm.sock, Duration::from_secs(600)).expect("restore ready"));
        let _ = vm.child.kill();
        let _ = vm.child.wait();
    }
    restores.sort();
    let median = restores[restores.len() / 2];
    println!(
        "cold boot to ready           {:>10.3} s",
        cold_t.as_secs_f64()
    );
    println!(
        "restore to ready (median of 5) {:>8.1} ms   (best {:.1} ms)",
        median.as_secs_f64() * 1e3,
        restores[0].as_secs_f64() * 1e3
    );
    println!(
        "ratio cold/restore           {:>10.0}x",
        cold_t.as_secs_f64() / median.as_secs_f64()
    );

    let mut warm: Vec<Vm> = (0..count)
        .map(|i| spawn_restore(dir.path(), i, &template))
        .collect();
    memory_table("restored from one template", &mut warm);
    // Cold boots are slow here (each emulates ~30 s of guest kernel); allow fewer of them.
    let cold_count: usize = std::env::var("KENNEL_BENCH_COLD_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(count);
    let mut cold: Vec<Vm> = (0..cold_count)
        .map(|i| spawn_cold(dir.path(), i, &vmlinux, &initrd))
        .collect();
    memory_table("cold-booted", &mut cold);
}
