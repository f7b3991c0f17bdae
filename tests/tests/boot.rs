//! End-to-end: kennel-vmm boots our guest kernel on the real /dev/kvm with an initramfs whose
//! `/init` makes real system calls (mount, read /proc/uptime, fork + exec + wait, /dev/mem marker)
//! and then resets the machine, which ends the VMM with status 0.

use images::initramfs::Initramfs;
use kennel_tests::guest;
use std::process::Command;

#[test]
fn guest_boots_runs_init_and_stops() {
    let vmlinux = guest::vmlinux().unwrap();
    let init = guest::test_init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    Initramfs::new()
        .init(&init)
        .unwrap()
        .write_file(&initrd)
        .unwrap();

    let out = Command::new(guest::workspace_bin("kennel-vmm"))
        .args(["run", "--mem", "128", "--timeout", "900", "--kernel"])
        .arg(&vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .output()
        .expect("kennel-vmm runs");
    let console = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let context = format!("--- console ---\n{console}\n--- kennel-vmm ---\n{log}");
    assert!(out.status.success(), "exit {:?}\n{context}", out.status);
    for expected in [
        "Run /init as init process",
        "kennel-test-init: started as pid 1",
        "kennel-test-init: marker written",
        "kennel-test-init: uptime ",
        "kennel-test-init: child pid ",
        "kennel-test-init: child exited with 7",
        "kennel-test-init: all checks passed",
    ] {
        assert!(
            console.contains(expected),
            "missing {expected:?}\n{context}"
        );
    }
    assert!(!console.contains("FAILED"), "{context}");
    assert!(log.contains("guest marker 0x01"), "{context}");
    assert!(log.contains("guest stopped (reset)"), "{context}");
}
