//! Device benchmark, kennel-vmm and qemu `-M microvm` side by side on the same kernel,
//! initramfs and disk image: sequential read throughput of a virtio-blk disk inside the guest,
//! and (kennel-vmm only) vsock round-trip latency from the host to a guest echo server.
//! qemu's vsock needs the host's vhost-vsock module, so it has no figure here.
//!
//! Run with `bash scripts/bench`. Figures only; nothing is asserted.

use kennel_tests::guest;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DISK_MIB: usize = 16;

fn blk_line(line: &str) -> Option<String> {
    line.split("blkbench: ")
        .nth(1)
        .map(|s| s.trim().to_string())
}

fn main() {
    let vmlinux = guest::vmlinux().expect("KENNEL_VMLINUX");
    let init = guest::test_init().expect("KENNEL_TEST_INIT");
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "initrd.cpio", &init);
    let disk = dir.path().join("disk.img");
    let data: Vec<u8> = (0..DISK_MIB << 20).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&disk, data).unwrap();
    let sock = dir.path().join("vsock.sock");
    println!("device benchmark: {DISK_MIB} MiB raw disk, 128 MiB guest, 1 vCPU");

    // kennel-vmm
    let mut child = Command::new(guest::workspace_bin("kennel-vmm"))
        .args([
            "run",
            "--mem",
            "128",
            "--cmdline",
            "kennel.test=bench",
            "--kernel",
        ])
        .arg(&vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--disk")
        .arg(format!("path={},ro,serial=bench", disk.display()))
        .arg("--vsock")
        .arg(format!("cid=5,socket={}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut kennel_blk = None;
    let mut rtts = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(b) = blk_line(&line) {
            kennel_blk = Some(b);
        }
        if line.contains("echo server ready") {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(b"CONNECT 5000\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut ok = String::new();
            r.read_line(&mut ok).unwrap();
            let mut b = [0u8; 1];
            for _ in 0..200 {
                let t = Instant::now();
                s.write_all(b"x").unwrap();
                r.read_exact(&mut b).unwrap();
                rtts.push(t.elapsed());
            }
            drop(s);
        }
        if line.contains("all checks passed") || line.contains("FAILED") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    // qemu microvm, same disk.
    let append = vmm::profile::Profile::Auto
        .resolve()
        .kernel_args()
        .join(" ")
        + " kennel.test=bench";
    let mut q = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ])
        .args([
            "-m",
            "128",
            "-nodefaults",
            "-no-reboot",
            "-nographic",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-drive")
        .arg(format!(
            "id=d0,file={},format=raw,if=none,readonly=on",
            disk.display()
        ))
        .args(["-device", "virtio-blk-device,drive=d0", "-append", &append])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut qemu_blk = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    for line in BufReader::new(q.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(b) = blk_line(&line) {
            qemu_blk = Some(b);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let _ = q.kill();
    let _ = q.wait();

    let none = || "no figure".to_string();
    println!("virtio-blk sequential read in the guest:");
    println!("  kennel-vmm  {}", kennel_blk.unwrap_or_else(none));
    println!("  qemu        {}", qemu_blk.unwrap_or_else(none));
    if !rtts.is_empty() {
        rtts.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "vsock round trip host->guest->host, 1 byte x {}: median {:.0} us, p99 {:.0} us",
            rtts.len(),
            us(rtts[rtts.len() / 2]),
            us(rtts[rtts.len() * 99 / 100])
        );
    }
}
