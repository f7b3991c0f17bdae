//! Templates on the real /dev/kvm: one cold boot builds a template (the guest signals "ready"
//! with marker 2 and is snapshotted), then two VMs are restored from it at once. Each gets its
//! own CID (the guest re-reads it after the vsock transport reset), answers over vsock, and
//! after the host reseeds each guest's random pool their /dev/urandom bytes differ. Damaged
//! snapshots (truncated memory, flipped state byte, another format version, another kernel)
//! are refused before any vCPU runs.

use kennel_tests::{guest, procfs};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(300);

fn vmm() -> Command {
    Command::new(guest::workspace_bin("kennel-vmm"))
}

fn restore(template: &Path, dir: &Path, name: &str, cid: u64) -> (Child, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let child = vmm()
        .arg("restore")
        .arg("--snapshot")
        .arg(template)
        .args(["--disk", "empty,ro", "--timeout", "600", "--console"])
        .arg(dir.join(format!("{name}.console")))
        .arg("--vsock")
        .arg(format!("cid={cid},socket={}", sock.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, sock)
}

/// Connects to guest port 5000 through the hybrid vsock socket (retrying while it appears).
fn connect(sock: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Ok(mut s) = UnixStream::connect(sock) {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.write_all(b"CONNECT 5000\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut ok = String::new();
            r.read_line(&mut ok).unwrap();
            assert!(ok.starts_with("OK "), "handshake reply {ok:?}");
            return (s, r);
        }
        assert!(
            Instant::now() < deadline,
            "no vsock socket at {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ask(conn: &mut (UnixStream, BufReader<UnixStream>), line: &str) -> String {
    conn.0.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    conn.1.read_line(&mut reply).unwrap();
    reply.trim().to_string()
}

fn field<'a>(reply: &'a str, name: &str) -> &'a str {
    reply
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {reply:?}"))
}

fn refused(template: &Path, extra: &[&str]) -> String {
    let out = vmm()
        .arg("restore")
        .arg("--snapshot")
        .arg(template)
        .args(["--disk", "empty,ro", "--timeout", "5"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "restore should fail:\n{err}");
    assert!(
        !err.contains("first guest instruction"),
        "a vCPU ran:\n{err}"
    );
    err
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn template_restores_two_distinct_vms_and_refuses_damaged_snapshots() {
    let vmlinux = guest::vmlinux().unwrap();
    let init = guest::test_init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "initrd.cpio", &init);
    let cache = dir.path().join("templates");

    let cold = Instant::now();
    let template = guest::build_template(&vmlinux, &initrd, &["kennel.test=template"], &cache);
    let cold = cold.elapsed();
    assert!(template.join("memory").is_file() && template.join("state").is_file());
    let key = template.file_name().unwrap().to_string_lossy().into_owned();
    let list = vmm()
        .args(["template", "list", "--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&key));

    // Two VMs from one template, at the same time.
    let (mut a, sock_a) = restore(&template, dir.path(), "a", 11);
    let (mut b, sock_b) = restore(&template, dir.path(), "b", 12);
    let mut conn_a = connect(&sock_a);
    let mut conn_b = connect(&sock_b);
    let info_a = ask(&mut conn_a, "info");
    let info_b = ask(&mut conn_b, "info");
    assert_eq!(field(&info_a, "cid="), "11", "{info_a}");
    assert_eq!(field(&info_b, "cid="), "12", "{info_b}");
    let seed = |n: u8| -> String { (0..32).map(|i| format!("{:02x}", i * 7 + n)).collect() };
    assert_eq!(ask(&mut conn_a, &format!("seed {}", seed(1))), "seeded");
    assert_eq!(ask(&mut conn_b, &format!("seed {}", seed(2))), "seeded");
    let rand_a = field(&ask(&mut conn_a, "info"), "rand=").to_string();
    let rand_b = field(&ask(&mut conn_b, "info"), "rand=").to_string();
    assert_ne!(rand_a, rand_b, "two restored VMs share randomness");

    let fp_a = procfs::footprint(a.id(), 128 << 10).unwrap();
    let fp_b = procfs::footprint(b.id(), 128 << 10).unwrap();
    eprintln!(
        "template: cold build {:.1} s; restored VMs: guest RSS {} / {} KiB, VMM own RSS {} / {} KiB",
        cold.as_secs_f64(),
        fp_a.guest_kib,
        fp_b.guest_kib,
        fp_a.own_kib,
        fp_b.own_kib
    );
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        let out = child.wait_with_output_ref();
        assert!(out.contains("restored "), "{out}");
    }

    // Damaged copies are refused before any vCPU runs.
    let bad = dir.path().join("bad");
    copy_dir(&template, &bad);
    let mem = bad.join("memory");
    let len = std::fs::metadata(&mem).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mem)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(refused(&bad, &[]).contains("corrupt"));
    copy_dir(&template, &bad);
    let state = bad.join("state");
    let mut bytes = std::fs::read(&state).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x01;
    std::fs::write(&state, &bytes).unwrap();
    assert!(refused(&bad, &[]).contains("checksum mismatch"));
    let good = std::fs::read(template.join("state")).unwrap();
    let text = String::from_utf8_lossy(&good).replacen(" v1 ", " v9 ", 1);
    std::fs::write(&state, text.as_bytes()).unwrap();
    assert!(refused(&bad, &[]).contains("version 9 is not supported"));
    copy_dir(&template, &bad);
    let other_kernel = dir.path().join("other-vmlinux");
    std::fs::write(&other_kernel, b"\x7fELF not the same kernel").unwrap();
    let err = refused(&bad, &["--kernel", other_kernel.to_str().unwrap()]);
    assert!(err.contains("taken with kernel"), "{err}");

    let rm = vmm()
        .args(["template", "rm", &key, "--cache"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(rm.success());
    assert!(!template.exists());
}

trait WaitOutput {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitOutput for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}
