//! End-to-end on the real /dev/kvm, in one boot (guest boots cost ~30 s here): kennel-vmm boots our
//! kernel with an initramfs whose `/init` makes real system calls (mount, read /proc/uptime, fork +
//! exec + wait, /dev/mem boot marker), then exercises the devices: an ext4 disk read-only and one
//! read-write (the host reads the guest's file afterwards), vsock host→guest and guest→host, a disk
//! attached after boot through the control API, and finally resets the machine, which ends the VMM
//! with status 0.

use kennel_tests::guest;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(420);

fn ext4_image(dir: &Path, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    for (file, content) in files {
        std::fs::write(src.join(file), content).unwrap();
    }
    let img = dir.join(format!("{name}.img"));
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("16M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs) runs");
    assert!(status.success());
    img
}

fn api(sock: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn guest_boots_runs_init_and_uses_its_devices() {
    let vmlinux = guest::vmlinux().unwrap();
    let init = guest::test_init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "initrd.cpio", &init);
    let disk_a = ext4_image(dir.path(), "a", &[("hello.txt", "hello from disk a\n")]);
    let disk_b = ext4_image(dir.path(), "b", &[]);
    let disk_c = ext4_image(dir.path(), "c", &[("hello.txt", "hello from disk c\n")]);
    let vsock = dir.path().join("vsock.sock");
    let api_sock = dir.path().join("api.sock");

    // The host listener a guest connection to port 6000 reaches.
    let host_listener = UnixListener::bind(format!("{}_6000", vsock.display())).unwrap();
    let host_side = std::thread::spawn(move || {
        let (mut s, _) = host_listener.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        s.write_all(format!("hi guest, got: {}", line.trim()).as_bytes())
            .unwrap();
        line
    });

    let mut child = Command::new(guest::workspace_bin("kennel-vmm"))
        .args(["run", "--mem", "128", "--timeout", "420", "--kernel"])
        .arg(&vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--disk")
        .arg(format!("path={},ro,serial=disk-a", disk_a.display()))
        .arg("--disk")
        .arg(format!("path={},serial=disk-b", disk_b.display()))
        .args(["--disk", "empty,ro"])
        .arg("--vsock")
        .arg(format!("cid=7,socket={}", vsock.display()))
        .arg("--api-socket")
        .arg(&api_sock)
        .args(["--cmdline", "kennel.test=devices"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kennel-vmm runs");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut console = String::new();
    let mut echoed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        console.push_str(&line);
        console.push('\n');
        if line.contains("vsock listening on 5000") {
            let mut s = UnixStream::connect(&vsock).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.write_all(b"CONNECT 5000\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut ok = String::new();
            r.read_line(&mut ok).unwrap();
            assert!(ok.starts_with("OK "), "handshake reply {ok:?}");
            s.write_all(b"hello guest\n").unwrap();
            r.read_line(&mut echoed).unwrap();
        }
        if line.contains("waiting for vdc") {
            let bad = api(&api_sock, r#"{"op":"attach_disk","slot":9,"path":"/x"}"#);
            assert!(bad.contains("no disk slot 9"), "{bad}");
            let reply = api(
                &api_sock,
                &format!(
                    r#"{{"op":"attach_disk","slot":2,"path":"{}","serial":"disk-c"}}"#,
                    disk_c.display()
                ),
            );
            assert!(reply.contains(r#""ok":true"#), "{reply}");
            let status = api(&api_sock, r#"{"op":"status"}"#);
            assert!(
                status.contains("disk-c") && status.contains("running"),
                "{status}"
            );
        }
    }
    let status = child.wait().unwrap();
    let log = log_thread.join().unwrap();
    let context = format!("--- console ---\n{console}\n--- kennel-vmm ---\n{log}");
    assert!(status.success(), "exit {status:?}\n{context}");
    for expected in [
        "Run /init as init process",
        "kennel-test-init: started as pid 1",
        "kennel-test-init: uptime ",
        "kennel-test-init: child pid ",
        "kennel-test-init: child exited with 7",
        "kennel-test-init: vda serial disk-a",
        "kennel-test-init: disk a says: hello from disk a",
        "kennel-test-init: disk b written",
        "kennel-test-init: vsock host said: hello guest",
        "kennel-test-init: vsock host replied: hi guest, got: hello from the guest",
        "kennel-test-init: vdc serial disk-c",
        "kennel-test-init: disk c says: hello from disk c",
        "kennel-test-init: all checks passed",
    ] {
        assert!(
            console.contains(expected),
            "missing {expected:?}\n{context}"
        );
    }
    assert!(!console.contains("FAILED"), "{context}");
    assert_eq!(echoed.trim(), "echo: hello guest", "{context}");
    assert_eq!(host_side.join().unwrap().trim(), "hello from the guest");
    assert!(log.contains("guest marker 0x01"), "{context}");
    assert!(log.contains("guest stopped (reset)"), "{context}");

    // The host reads what the guest wrote to the read-write disk.
    let out = Command::new("debugfs")
        .args(["-R", "cat /from-guest.txt"])
        .arg(&disk_b)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "written by the guest"
    );
}
