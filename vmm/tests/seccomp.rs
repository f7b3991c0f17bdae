//! The seccomp filters are real: a forked child that loads a thread kind's filter dies with
//! SIGSYS on a forbidden call (and lives through an allowed one); a running kennel-vmm has a
//! filter on every thread, and the control API operations (attach/detach, pause, snapshot,
//! resume, status, shutdown) and a restore work under them. The guest here is a two-byte
//! `jmp .` loop, so no guest kernel is needed; guest-driven device I/O under the filters is
//! proven by the VM tests (`tests/tests/boot.rs`, `template.rs`, `agent_vm.rs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vmm::seccomp::{self, ioctls, Policy, ThreadKind};

/// What the child does after loading the filter.
#[derive(Clone, Copy, Debug)]
enum Call {
    PacketSocket,
    UnixSocket,
    Execve,
    Fork,
    Clone3,
    KvmRun,
    KvmCreateVm,
    MmapExec,
    MmapData,
    Openat,
}

/// Runs `call` with a raw syscall; returns the exit code the child should use (0: the call
/// returned as expected for an allowed call).
fn perform(call: Call) -> i32 {
    // SAFETY: raw syscalls on invalid or fresh descriptors and anonymous memory; the child
    // exits right after, so nothing it creates is used.
    unsafe {
        match call {
            Call::PacketSocket => {
                libc::syscall(libc::SYS_socket, libc::AF_PACKET, libc::SOCK_RAW, 0);
            }
            Call::UnixSocket => {
                let fd = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
                return if fd >= 0 { 0 } else { 2 };
            }
            Call::Execve => {
                let path = c"/bin/true".as_ptr();
                let argv = [path, std::ptr::null()];
                libc::syscall(
                    libc::SYS_execve,
                    path,
                    argv.as_ptr(),
                    std::ptr::null::<*const libc::c_char>(),
                );
            }
            Call::Fork => {
                // fork(2) as glibc issues it: clone with SIGCHLD and no thread flags.
                let rc = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
                if rc == 0 {
                    libc::_exit(0);
                }
            }
            Call::Clone3 => {
                let rc = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0);
                let errno = *libc::__errno_location();
                return if rc == -1 && errno == libc::ENOSYS {
                    0
                } else {
                    3
                };
            }
            Call::KvmRun => {
                let rc = libc::syscall(libc::SYS_ioctl, -1, ioctls::KVM_RUN, 0);
                let errno = *libc::__errno_location();
                return if rc == -1 && errno == libc::EBADF {
                    0
                } else {
                    4
                };
            }
            Call::KvmCreateVm => {
                libc::syscall(libc::SYS_ioctl, -1, ioctls::KVM_CREATE_VM, 0);
            }
            Call::MmapExec | Call::MmapData => {
                let prot = if matches!(call, Call::MmapExec) {
                    libc::PROT_READ | libc::PROT_EXEC
                } else {
                    libc::PROT_READ | libc::PROT_WRITE
                };
                let p = libc::syscall(
                    libc::SYS_mmap,
                    0,
                    4096,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                return if p != -1 { 0 } else { 5 };
            }
            Call::Openat => {
                let fd = libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    c"/proc/self/stat".as_ptr(),
                    0,
                );
                return if fd >= 0 { 0 } else { 6 };
            }
        }
    }
    // A forbidden call that was not stopped.
    1
}

/// Forks a child that loads `kind`'s filter (compiled here, before the fork: the child only
/// makes raw syscalls) and performs `call`; returns its wait status.
fn in_filtered_child(kind: ThreadKind, call: Call) -> i32 {
    let programs = seccomp::programs(kind, Policy::Kill).unwrap();
    // SAFETY: the child makes only raw syscalls (no allocation, no locks) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match seccomp::apply(kind, &programs) {
            Ok(()) => perform(call),
            Err(_) => 99,
        };
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    status
}

fn killed_by_sigsys(status: i32) -> bool {
    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
}

#[test]
fn forbidden_calls_kill_the_process_with_sigsys() {
    let cases = [
        (ThreadKind::Vcpu, Call::PacketSocket),
        (ThreadKind::Vcpu, Call::Execve),
        (ThreadKind::Vcpu, Call::Fork),
        (ThreadKind::Vcpu, Call::KvmCreateVm),
        (ThreadKind::Vcpu, Call::MmapExec),
        (ThreadKind::Net, Call::Openat),
        (ThreadKind::Block, Call::UnixSocket),
        (ThreadKind::Block, Call::KvmRun),
        (ThreadKind::Net, Call::UnixSocket),
        (ThreadKind::Vsock, Call::PacketSocket),
        (ThreadKind::Api, Call::KvmRun),
        (ThreadKind::Api, Call::Execve),
        (ThreadKind::Main, Call::Openat),
        (ThreadKind::Main, Call::Clone3),
    ];
    for (kind, call) in cases {
        let status = in_filtered_child(kind, call);
        assert!(
            killed_by_sigsys(status),
            "{kind} filter, {call:?}: wait status {status:#x}, not killed by SIGSYS"
        );
    }
}

#[test]
fn allowed_calls_go_through_the_same_filters() {
    let cases = [
        (ThreadKind::Vcpu, Call::KvmRun),
        (ThreadKind::Vcpu, Call::MmapData),
        (ThreadKind::Vcpu, Call::Clone3),
        (ThreadKind::Api, Call::Clone3),
        (ThreadKind::Vsock, Call::UnixSocket),
        (ThreadKind::Api, Call::Openat),
    ];
    for (kind, call) in cases {
        let status = in_filtered_child(kind, call);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{kind} filter, {call:?}: wait status {status:#x}"
        );
    }
}

/// A minimal ELF64 "kernel": one PT_LOAD segment at `paddr` whose code is `jmp .`.
fn loop_elf(paddr: u64) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56 + 16];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes());
    e[18..20].copy_from_slice(&62u16.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&paddr.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes());
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = 64;
    e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
    e[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes());
    e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
    e[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes());
    e[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
    e[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes());
    e[ph + 40..ph + 48].copy_from_slice(&16u64.to_le_bytes());
    e[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    e[120] = 0xeb; // jmp .
    e[121] = 0xfe;
    e
}

fn api(sock: &Path, request: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {}: {e}", sock.display()),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    writeln!(s, "{request}").unwrap();
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

fn assert_ok(reply: &str, what: &str) {
    assert!(reply.contains("\"ok\":true"), "{what}: {reply}");
}

/// Asks the VMM to stop (it may exit before its reply is read).
fn shutdown(sock: &Path) {
    let reply = api(sock, r#"{"op":"shutdown"}"#);
    assert!(
        reply.is_empty() || reply.contains("\"ok\":true"),
        "shutdown: {reply}"
    );
}

/// Every thread of `pid` runs in seccomp filter mode (2); returns the thread names.
fn filtered_threads(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_default();
        if comm.is_empty() {
            continue; // the thread ended meanwhile
        }
        assert_eq!(mode, "2", "thread {} is not filtered", comm.trim());
        names.push(comm.trim().to_string());
    }
    names
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kennel-vmm did not exit after shutdown");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Exercises the control API of a running VMM and shuts it down; `snap` is where it snapshots.
fn exercise_api(child: &mut Child, sock: &Path, spare: &Path, snap: &Path) {
    assert_ok(&api(sock, r#"{"op":"status"}"#), "status");
    let attach = format!(
        r#"{{"op":"attach_disk","slot":1,"path":"{}","serial":"spare"}}"#,
        spare.display()
    );
    assert_ok(&api(sock, &attach), "attach_disk");
    assert!(api(sock, r#"{"op":"status"}"#).contains("spare"));
    assert_ok(
        &api(sock, r#"{"op":"detach_disk","slot":1}"#),
        "detach_disk",
    );
    assert_ok(&api(sock, r#"{"op":"pause"}"#), "pause");
    let snapshot = format!(r#"{{"op":"snapshot","dir":"{}"}}"#, snap.display());
    assert_ok(&api(sock, &snapshot), "snapshot");
    assert_ok(&api(sock, r#"{"op":"resume"}"#), "resume");
    let names = filtered_threads(child.id());
    assert!(names.iter().any(|n| n == "vcpu0"), "{names:?}");
    assert!(names.iter().any(|n| n == "api"), "{names:?}");
    shutdown(sock);
    let status = wait_exit(child);
    assert!(status.success(), "kennel-vmm exited with {status}");
}

#[test]
fn a_running_vmm_is_filtered_and_its_api_works_under_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("loop.elf");
    std::fs::write(&kernel, loop_elf(2 << 20)).unwrap();
    let disk = dir.path().join("disk.img");
    let spare = dir.path().join("spare.img");
    for d in [&disk, &spare] {
        std::fs::File::create(d).unwrap().set_len(1 << 20).unwrap();
    }
    let sock = dir.path().join("api.sock");
    let snap = dir.path().join("snap");
    let vmm = env!("CARGO_BIN_EXE_kennel-vmm");
    let mut child = Command::new(vmm)
        .args([
            "run",
            "--mem",
            "64",
            "--console",
            "none",
            "--timeout",
            "120",
        ])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--disk")
        .arg(format!("path={},serial=d0", disk.display()))
        .args(["--disk", "empty"])
        .arg("--vsock")
        .arg(format!(
            "cid=3,socket={}",
            dir.path().join("v1.sock").display()
        ))
        .arg("--api-socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    exercise_api(&mut child, &sock, &spare, &snap);

    // The snapshot restores, under the filters too.
    let sock2 = dir.path().join("api2.sock");
    let mut child = Command::new(vmm)
        .args(["restore", "--console", "none", "--timeout", "120"])
        .arg("--snapshot")
        .arg(&snap)
        .arg("--disk")
        .arg(format!("path={},serial=d0", disk.display()))
        .args(["--disk", "empty"])
        .arg("--vsock")
        .arg(format!(
            "cid=4,socket={}",
            dir.path().join("v2.sock").display()
        ))
        .arg("--api-socket")
        .arg(&sock2)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    exercise_api(&mut child, &sock2, &spare, &dir.path().join("snap2"));
}

#[test]
fn no_seccomp_leaves_threads_unfiltered() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("loop.elf");
    std::fs::write(&kernel, loop_elf(2 << 20)).unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kennel-vmm"))
        .args(["run", "--no-seccomp", "--mem", "64", "--console", "none"])
        .args(["--timeout", "120", "--kernel"])
        .arg(&kernel)
        .arg("--api-socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_ok(&api(&sock, r#"{"op":"status"}"#), "status");
    let status =
        std::fs::read_to_string(format!("/proc/{}/task/{}/status", child.id(), child.id()))
            .unwrap();
    assert!(status.contains("Seccomp:\t0"), "{status}");
    // PR_SET_NO_NEW_PRIVS is set either way.
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    shutdown(&sock);
    assert!(wait_exit(&mut child).success());
}

#[test]
fn seccomp_print_lists_rules_and_bpf() {
    let vmm = env!("CARGO_BIN_EXE_kennel-vmm");
    let out = Command::new(vmm)
        .args(["seccomp", "print", "--thread", "vcpu"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("arg1 == 0xae80 (KVM_RUN)"), "{text}");
    let out = Command::new(vmm)
        .args(["seccomp", "print", "--thread", "api", "--bpf"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("instructions"));
    let out = Command::new(vmm)
        .args(["seccomp", "print", "--thread", "gpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown thread kind \"gpu\""));
}
