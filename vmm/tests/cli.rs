//! kennel-vmm's command line on bad input: each failure is one clear line, a non-zero status, and
//! nothing left behind. These run without booting a guest.

use std::path::Path;
use std::process::{Command, Output};

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kennel-vmm"))
}

fn error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kennel-vmm:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected, got:\n{err}");
    lines[0].to_string()
}

#[test]
fn missing_kernel_is_named() {
    let out = vmm()
        .args(["run", "--kernel", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("/nonexistent/vmlinux"), "{line}");
}

#[test]
fn non_elf_kernel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    std::fs::write(&kernel, b"MZ\x00\x00 not an ELF image").unwrap();
    let out = vmm()
        .arg("run")
        .arg("--kernel")
        .arg(&kernel)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(error_line(&out).contains("not an ELF vmlinux"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing left behind"
    );
}

#[test]
fn memory_too_small_for_the_kernel() {
    // An ELF whose only segment sits at 32 MiB cannot load into 16 MiB of RAM.
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, tiny_elf(32 << 20)).unwrap();
    let out = vmm()
        .args(["run", "--mem", "16", "--kernel"])
        .arg(&kernel)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("16 MiB"), "{line}");
}

#[test]
fn unknown_config_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vm.json");
    std::fs::write(&cfg, r#"{"kernel": "/k", "memory_mb": 64}"#).unwrap();
    let out = vmm().arg("run").arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    assert!(error_line(&out).contains("memory_mb"));
}

#[test]
fn zero_vcpus_is_refused() {
    let out = vmm()
        .args(["run", "--kernel", "/k", "--vcpus", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(error_line(&out).contains("vcpus"));
}

#[test]
fn no_kvm_device_is_explained() {
    // A private mount namespace with an empty /dev: the VMM must say KVM is missing.
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, tiny_elf(2 << 20)).unwrap();
    let script = format!(
        "mount -t tmpfs none /dev && exec {} run --kernel {}",
        env!("CARGO_BIN_EXE_kennel-vmm"),
        kernel.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(error_line(&out).contains("/dev/kvm does not exist"));
}

#[test]
fn kvm_permission_is_explained() {
    if !Path::new("/dev/kvm").exists() {
        panic!("this test needs /dev/kvm");
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, tiny_elf(2 << 20)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_kennel-vmm"))
        .args(["run", "--kernel"])
        .arg(&kernel)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(error_line(&out).contains("no permission to open /dev/kvm"));
}

/// A minimal ELF64 executable with one PT_LOAD segment of 16 bytes at `paddr`.
fn tiny_elf(paddr: u64) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56 + 16];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little endian
    e[6] = 1; // version
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&paddr.to_le_bytes()); // entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = 64;
    e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // offset
    e[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes()); // vaddr
    e[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes()); // paddr
    e[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes()); // filesz
    e[ph + 40..ph + 48].copy_from_slice(&16u64.to_le_bytes()); // memsz
    e[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes()); // align
    e
}
