//! Stress of the host↔guest agent channel (kennel-cri's path: hybrid vsock Unix socket → VMM
//! muxer → virtio-vsock → kennel-agent, and back) on one real VM restored from the shared
//! template (issue 23, "Host↔guest data integrity").
//!
//! Every byte is checked on the other side:
//! - an echo storm: 64 RPCs in flight over 4 gRPC connections, `WaitProcess` of container ids
//!   of 0 B … 8 KiB of hex whose `NotFound` message must quote the id back exactly (the id goes
//!   host→guest in the request body, comes back guest→host in the trailers) — the failure seen
//!   in the wild had 16 NUL bytes in such an id — running during every other phase;
//! - large frames host→guest: `PutFiles` of busybox itself (2 MB, then run from it) and of
//!   payloads of 0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 1 MiB and odd sizes, checked by
//!   `sha256sum` in the guest;
//! - credit exhaustion guest→host: the agent's port forwarder carries 1 MiB from a guest
//!   `nc` to a host reader that stalls first and then reads in small pieces;
//! - a raw stream host→guest through the forwarder, written in odd-sized pieces and half-closed,
//!   checked by `sha256sum` in the guest.
//!
//! One VM serves every case; the test runs in about a minute once the template is cached.

use agent_proto::pb;
use kennel_tests::guest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RPC_TIMEOUT: Duration = Duration::from_secs(240);
/// Sizes of the payloads copied into the guest.
const SIZES: &[usize] = &[
    0,
    1,
    7,
    4095,
    4096,
    4097,
    4052,
    4053,
    65535,
    65536,
    65537,
    100_003,
    262_145,
    1 << 20,
];
/// Lengths of the ids echoed back by `NotFound`.
const ID_LENS: &[usize] = &[
    0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 4051, 4095, 4096, 4097, 8191,
];
const FORWARD_OUT_PORT: u16 = 7000;
const FORWARD_IN_PORT: u16 = 7001;

/// Deterministic bytes without long zero runs (so a zero-filled hole cannot pass).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect()
}

fn hex_id(len: usize, seed: u64) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    payload(len, seed)
        .iter()
        .map(|b| HEX[(*b >> 4) as usize] as char)
        .collect()
}

/// sha256 of `data`, by the host's `sha256sum`.
fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

struct Vm {
    child: Child,
    vsock: PathBuf,
    console: PathBuf,
}

fn restore(template: &Path, dir: &Path) -> Vm {
    let vsock = dir.join("stress.vsock");
    let console = dir.join("stress.console");
    let child = Command::new(guest::workspace_bin("kennel-vmm"))
        .arg("restore")
        .arg("--snapshot")
        .arg(template)
        .args(["--disk", "empty,ro", "--timeout", "600", "--console"])
        .arg(&console)
        .arg("--vsock")
        .arg(format!("cid=41,socket={}", vsock.display()))
        .stderr(std::fs::File::create(dir.join("vmm.log")).unwrap())
        .spawn()
        .unwrap();
    Vm {
        child,
        vsock,
        console,
    }
}

impl Drop for Vm {
    /// A failed case must not leave the VMM running until its own timeout.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn client(vm: &Vm) -> agent_proto::AgentClient {
    let deadline = Instant::now() + RPC_TIMEOUT;
    let c = loop {
        match agent_proto::client::connect_hybrid_vsock(&vm.vsock, agent_proto::DEFAULT_VSOCK_PORT)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("agent connection: {e}"),
        }
    };
    c.max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20)
}

/// One echo: the id must come back unchanged inside the NotFound message.
async fn echo(c: &mut agent_proto::AgentClient, id: &str) -> Result<(), String> {
    let r = c
        .wait_process(pb::ProcessRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await;
    match r {
        Ok(_) => Err(format!("WaitProcess of {}-byte id succeeded", id.len())),
        Err(s) if s.code() == tonic::Code::NotFound => {
            if s.message().contains(&format!("\"{id}\"")) {
                Ok(())
            } else {
                Err(format!(
                    "{}-byte id came back as {:?}",
                    id.len(),
                    s.message()
                ))
            }
        }
        Err(s) => Err(format!("{}-byte id: {s}", id.len())),
    }
}

#[derive(Default)]
struct Storm {
    stop: AtomicBool,
    done: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Runs echoes on `clients`, 64 in flight, until stopped.
fn spawn_storm(
    clients: Vec<agent_proto::AgentClient>,
    storm: Arc<Storm>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for lane in 0..64usize {
        let mut c = clients[lane % clients.len()].clone();
        let storm = storm.clone();
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !storm.stop.load(Ordering::Relaxed) {
                let len = ID_LENS[(lane + round as usize) % ID_LENS.len()];
                let id = hex_id(len, lane as u64 * 1000 + round);
                match tokio::time::timeout(RPC_TIMEOUT, echo(&mut c, &id)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => storm.errors.lock().unwrap().push(e),
                    Err(_) => storm
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("echo of {len} bytes timed out")),
                }
                storm.done.fetch_add(1, Ordering::Relaxed);
                round += 1;
                // Bursts of 64 in flight, with room between them for the other phases (every
                // guest syscall is emulated here).
                if round.is_multiple_of(8) {
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                }
            }
        }));
    }
    tasks
}

fn vfile(path: &str, mode: u32, data: Vec<u8>) -> pb::VolumeFile {
    pb::VolumeFile {
        path: path.into(),
        mode,
        data,
    }
}

fn spec(script: &str, vols: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/busybox", "sh", "-c", script], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/vols", "type": "bind", "source": vols, "options": ["rbind", "ro"]}
        ],
        "linux": {"resources": {"pids": {"limit": 64}, "memory": {"limit": 67108864}}}
    }))
    .unwrap()
}

/// Connects to a guest localhost port through the forwarder, retrying while nothing listens.
async fn forward(vsock: &Path, port: u16) -> tokio::net::UnixStream {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match agent_proto::forward::connect(vsock, port).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("forward to guest port {port}: {e}"),
        }
    }
}

/// Reads container stdout until `pred` holds on what was read so far.
async fn read_until(
    out: &mut tonic::Streaming<pb::OutputChunk>,
    acc: &mut String,
    pred: impl Fn(&str) -> bool,
) {
    while !pred(acc) {
        match tokio::time::timeout(RPC_TIMEOUT, out.message()).await {
            Ok(Ok(Some(chunk))) => acc.push_str(&String::from_utf8_lossy(&chunk.data)),
            other => panic!("container stdout ended ({other:?}) after {acc:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_channel_keeps_every_byte() {
    let started = Instant::now();
    let vmlinux = guest::vmlinux().unwrap();
    let agent = guest::agent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "agent.cpio", &agent);
    let template = guest::build_template(&vmlinux, &initrd, &[], &guest::template_cache());
    println!(
        "template ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut vm = restore(&template, dir.path());

    let mut main = client(&vm).await;
    main.create_sandbox(pb::CreateSandboxRequest {
        hostname: "stress".into(),
        ..Default::default()
    })
    .await
    .expect("CreateSandbox");
    let mut clients = vec![main.clone()];
    for _ in 0..3 {
        clients.push(client(&vm).await);
    }
    println!(
        "agent connected after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The echo storm runs under every later phase.
    let storm = Arc::new(Storm::default());
    let storm_tasks = spawn_storm(clients.clone(), storm.clone());

    // Large frames host→guest: busybox as a rootfs, payloads of every size, all at once.
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut root_files = vec![vfile("bin/busybox", 0o755, busybox.clone())];
    for d in ["proc", "dev", "tmp", "vols", "etc"] {
        root_files.push(vfile(&format!("{d}/keep"), 0, vec![]));
    }
    let mut puts = tokio::task::JoinSet::new();
    {
        let mut c = clients[1].clone();
        puts.spawn(async move {
            let r = c
                .put_files(pb::PutFilesRequest {
                    dir: "rootfs".into(),
                    files: root_files,
                })
                .await;
            ("rootfs".to_string(), r.map(|r| r.into_inner().path))
        });
    }
    let mut expected = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let data = payload(size, 7 + i as u64);
        expected.push((format!("p{i:02}"), sha256(&data)));
        let mut c = clients[i % clients.len()].clone();
        puts.spawn(async move {
            let name = format!("p{i:02}");
            let r = c
                .put_files(pb::PutFilesRequest {
                    dir: name.clone(),
                    files: vec![vfile("f", 0, data)],
                })
                .await;
            (name, r.map(|r| r.into_inner().path))
        });
    }
    let mut rootfs = String::new();
    while let Some(r) = puts.join_next().await {
        let (name, path) = r.unwrap();
        let path = path.unwrap_or_else(|s| panic!("PutFiles {name}: {s}"));
        if name == "rootfs" {
            rootfs = path;
        }
    }
    let vols = Path::new(&rootfs).parent().unwrap().display().to_string();
    println!(
        "{} payloads copied in after {:.1} s",
        SIZES.len() + 1,
        started.elapsed().as_secs_f64()
    );

    // One container does the guest side of every check, in order.
    let script = format!(
        "B=/bin/busybox; cd /vols; $B sha256sum p*/f; echo sums-done; \
         $B nc -l -p {FORWARD_OUT_PORT} < /vols/p{big:02}/f; \
         $B nc -l -p {FORWARD_IN_PORT} | $B sha256sum; echo all-done",
        big = SIZES.len() - 1
    );
    main.create_container(pb::CreateContainerRequest {
        container_id: "stress".into(),
        oci_spec_json: spec(&script, &vols),
        rootfs: Some(pb::Rootfs {
            lower_dirs: vec![format!("{rootfs}/..data")],
            readonly: false,
        }),
        tty: false,
    })
    .await
    .expect("CreateContainer from a busybox copied in by PutFiles");
    let req = pb::ProcessRequest {
        container_id: "stress".into(),
        exec_id: String::new(),
    };
    let mut out = main.read_stdout(req.clone()).await.unwrap().into_inner();
    main.start_container(pb::ContainerRequest {
        container_id: "stress".into(),
    })
    .await
    .expect("StartContainer");
    let mut text = String::new();
    read_until(&mut out, &mut text, |t| t.contains("sums-done\n")).await;
    for (name, digest) in &expected {
        let line = format!("{digest}  {name}/f\n");
        assert!(
            text.contains(&line),
            "guest digest of {name} differs: want {line:?} in {text:?}"
        );
    }
    println!(
        "guest digests match after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Guest→host past the credit: stall, then read in small pieces.
    let want = payload(SIZES[SIZES.len() - 1], 7 + SIZES.len() as u64 - 1);
    let mut s = forward(&vm.vsock, FORWARD_OUT_PORT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::with_capacity(want.len());
    let mut buf = vec![0u8; 4093];
    let mut pieces = 0usize;
    loop {
        let want_now = [1, 17, 4093, 500][pieces % 4];
        let n = tokio::time::timeout(RPC_TIMEOUT, s.read(&mut buf[..want_now]))
            .await
            .expect("forwarded stream stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        pieces += 1;
        if pieces.is_multiple_of(64) && got.len() < 256 * 1024 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(got.len(), want.len(), "forwarded stream length");
    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "forwarded stream differs from byte {at}: got {:?}",
            &got[at..(at + 32).min(got.len())]
        );
    }
    drop(s);
    println!(
        "1 MiB guest→host with a slow reader intact after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Host→guest raw stream in odd pieces, half-closed.
    let sent = payload(300_001, 99);
    let mut s = forward(&vm.vsock, FORWARD_IN_PORT).await;
    let mut off = 0;
    let mut k = 0;
    while off < sent.len() {
        let n = [1, 4097, 65537, 13, 4096][k % 5].min(sent.len() - off);
        s.write_all(&sent[off..off + n]).await.unwrap();
        off += n;
        k += 1;
    }
    s.shutdown().await.unwrap();
    read_until(&mut out, &mut text, |t| t.contains("all-done\n")).await;
    let line = format!("{}  -\n", sha256(&sent));
    assert!(
        text.contains(&line),
        "guest digest of the raw stream: want {line:?} in {text:?}"
    );
    drop(s);
    println!(
        "300001 B host→guest stream intact after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    storm.stop.store(true, Ordering::Relaxed);
    for t in storm_tasks {
        t.await.unwrap();
    }
    let errors = storm.errors.lock().unwrap().clone();
    let done = storm.done.load(Ordering::Relaxed);
    println!("echo storm: {done} RPCs, {} errors", errors.len());
    assert!(
        errors.is_empty(),
        "{} of {done} echoes failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(done >= 64, "only {done} echoes");

    let w = main
        .wait_process(req)
        .await
        .expect("WaitProcess")
        .into_inner();
    assert_eq!(w.exit_code, 0, "{text}");
    let _ = main.destroy_sandbox(pb::Empty {}).await;
    // DestroySandbox resets the guest, which ends the VMM with status 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = vm.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "VMM still running after DestroySandbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(vm.console.with_file_name("vmm.log")).unwrap_or_default();
    let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
    assert!(status.success(), "VMM exit {status:?}\n{log}\n{console}");
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
