//! kennel-agent as PID 1 of real VMs, driven from the host through kennel-vmm's hybrid vsock
//! socket. One cold boot builds a template (cached in the shared template cache; the agent signals "ready" with the boot marker and
//! the VM is snapshotted with an unplugged NIC); two pod VMs are restored from it inside a
//! network namespace the test makes (a bridge with one tap per pod), each NIC plugged into its
//! pod's tap. Each gets its identity through CreateSandbox (hostname, DNS, eth0 with the pod's
//! MAC and IP, wall clock, random seed), answers ping from the namespace at its own IP, gets an
//! image disk attached after restore through the control API, and runs a busybox container whose
//! output the host reads. The two differ in hostname, IP, MAC, CID and /dev/urandom bytes.
//! DestroySandbox ends each VMM process.

use agent_proto::pb;
use kennel_tests::guest;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RPC_TIMEOUT: Duration = Duration::from_secs(240);

/// An ext4 image holding a busybox rootfs (Debian's busybox-static with its applet links).
fn busybox_disk(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "tmp", "etc", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // Mount point for the sandbox's resolv.conf (the runtime bind-mounts it, as CRI runtimes do).
    std::fs::write(root.join("etc/resolv.conf"), b"").unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    let img = dir.join("busybox.ext4");
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    img
}

const GATEWAY: &str = "10.78.0.1";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a bridge holding the gateway address and a tap per pod; removed on
/// drop (taking its links with it).
struct PodNetwork {
    ns: String,
}

impl PodNetwork {
    fn new(taps: &[&str]) -> Self {
        let ns = format!("kn-agent-{}", std::process::id());
        ip(&["netns", "add", &ns]);
        let net = Self { ns };
        let n = net.ns.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&["-n", n, "link", "add", "knbr0", "type", "bridge"]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{GATEWAY}/24"),
            "dev",
            "knbr0",
        ]);
        ip(&["-n", n, "link", "set", "knbr0", "up"]);
        for tap in taps {
            ip(&["-n", n, "tuntap", "add", "dev", tap, "mode", "tap"]);
            ip(&["-n", n, "link", "set", tap, "master", "knbr0"]);
            ip(&["-n", n, "link", "set", tap, "up"]);
        }
        net
    }

    /// Pings `addr` from the namespace until it answers (or three minutes pass); returns whether
    /// it answered.
    fn ping(&self, addr: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args([
                    "netns", "exec", &self.ns, "busybox", "ping", "-c", "1", "-W", "5", addr,
                ])
                .output()
                .expect("busybox ping runs")
                .status
                .success();
            if ok {
                return true;
            }
        }
        false
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// One pod's identity.
struct Pod {
    name: &'static str,
    cid: u64,
    seed: u8,
    tap: &'static str,
    mac: &'static str,
    ip: &'static str,
}

struct PodVm {
    child: Child,
    vsock: PathBuf,
    api: PathBuf,
    console: PathBuf,
}

fn restore(template: &Path, dir: &Path, pod: &Pod, ns: &str) -> PodVm {
    let name = pod.name;
    let cid = pod.cid;
    let vsock = dir.join(format!("{name}.vsock"));
    let api = dir.join(format!("{name}.api"));
    let console = dir.join(format!("{name}.console"));
    // The VMM runs in the pod network's namespace, where it opens the pod's tap by name.
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(guest::workspace_bin("kennel-vmm"))
        .arg("restore")
        .arg("--net")
        .arg(format!("tap={}", pod.tap))
        .arg("--snapshot")
        .arg(template)
        .args(["--disk", "empty,ro", "--timeout", "1200", "--console"])
        .arg(&console)
        .arg("--vsock")
        .arg(format!("cid={cid},socket={}", vsock.display()))
        .arg("--api-socket")
        .arg(&api)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    PodVm {
        child,
        vsock,
        api,
        console,
    }
}

fn api(sock: &Path, request: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("control API {}: {e}", sock.display()),
        }
    };
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

fn spec(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]}
        ],
        "linux": {"resources": {"pids": {"limit": 64}, "memory": {"limit": 33554432}}}
    }))
    .unwrap()
}

/// Sets the pod's identity, checks its IP answers from the namespace, mounts its image and runs
/// one container; returns its stdout.
async fn run_pod(vm: &PodVm, pod: &Pod, net: &PodNetwork) -> String {
    let (hostname, seed) = (pod.name, pod.seed);
    let mut c = tokio::time::timeout(
        RPC_TIMEOUT,
        agent_proto::client::connect_hybrid_vsock(&vm.vsock, agent_proto::DEFAULT_VSOCK_PORT),
    )
    .await
    .expect("agent reachable in time")
    .expect("agent connection");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    c.create_sandbox(pb::CreateSandboxRequest {
        hostname: hostname.into(),
        dns: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        interfaces: vec![pb::Interface {
            name: "eth0".into(),
            mac: pod.mac.into(),
            address: pod.ip.into(),
            prefix_len: 24,
            mtu: 1500,
            gateway: GATEWAY.into(),
            routes: vec![],
        }],
        clock_unix_nanos: now.as_nanos() as u64,
        random_seed: (0..32)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i))
            .collect(),
        ..Default::default()
    })
    .await
    .expect("CreateSandbox");
    let started = Instant::now();
    assert!(
        net.ping(pod.ip),
        "{} does not answer ping at {}",
        pod.name,
        pod.ip
    );
    println!(
        "{}: {} answered ping {:.1} s after CreateSandbox",
        pod.name,
        pod.ip,
        started.elapsed().as_secs_f64()
    );
    c.mount_storage(pb::MountStorageRequest {
        serial: "img-busybox".into(),
        mount_point: "/run/images/busybox".into(),
        fstype: "ext4".into(),
        readonly: true,
        options: String::new(),
    })
    .await
    .expect("MountStorage");
    let id = "main";
    c.create_container(pb::CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec(&[
            "sh",
            "-c",
            "echo host=$(hostname); echo year=$(date +%Y); grep nameserver /etc/resolv.conf; echo addr=$(ip -4 addr show eth0 | grep -o 'inet [0-9./]*'); echo mac=$(ip link show eth0 | grep -o 'ether [0-9a-f:]*'); echo rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')",
        ]),
        rootfs: Some(pb::Rootfs {
            lower_dirs: vec!["/run/images/busybox".into()],
            readonly: false,
        }),
        tty: false,
    })
    .await
    .expect("CreateContainer");
    let req = pb::ProcessRequest {
        container_id: id.into(),
        exec_id: String::new(),
    };
    let mut out = c.read_stdout(req.clone()).await.unwrap().into_inner();
    let reader = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Ok(Some(chunk)) = out.message().await {
            v.extend_from_slice(&chunk.data);
        }
        v
    });
    c.start_container(pb::ContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("StartContainer");
    let w = c.wait_process(req).await.expect("WaitProcess").into_inner();
    let out = String::from_utf8_lossy(&reader.await.unwrap()).into_owned();
    assert_eq!(w.exit_code, 0, "container output: {out}");
    c.destroy_sandbox(pb::Empty {})
        .await
        .expect("DestroySandbox");
    out
}

fn line_value(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_containers_in_vms_restored_from_a_template() {
    let vmlinux = guest::vmlinux().unwrap();
    let agent = guest::agent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = guest::initramfs(dir.path(), "agent.cpio", &agent);
    let disk = busybox_disk(dir.path());

    let template = guest::build_template(&vmlinux, &initrd, &[], &guest::template_cache());

    let pods = [
        Pod {
            name: "pod-a",
            cid: 31,
            seed: 1,
            tap: "kntapa",
            mac: "02:4b:00:00:00:0a",
            ip: "10.78.0.10",
        },
        Pod {
            name: "pod-b",
            cid: 32,
            seed: 2,
            tap: "kntapb",
            mac: "02:4b:00:00:00:0b",
            ip: "10.78.0.11",
        },
    ];
    let net = PodNetwork::new(&[pods[0].tap, pods[1].tap]);
    let mut outputs = Vec::new();
    for pod in &pods {
        let mut vm = restore(&template, dir.path(), pod, &net.ns);
        let reply = api(
            &vm.api,
            &format!(
                r#"{{"op":"attach_disk","slot":0,"path":"{}","serial":"img-busybox"}}"#,
                disk.display()
            ),
        );
        assert!(reply.contains(r#""ok":true"#), "{reply}");
        let out = run_pod(&vm, pod, &net).await;
        // DestroySandbox resets the guest, which ends the VMM with status 0.
        let status = tokio::task::spawn_blocking(move || {
            let st = vm.child.wait().unwrap();
            let mut log = String::new();
            if let Some(mut e) = vm.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut log);
            }
            let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
            (st, log, console)
        })
        .await
        .unwrap();
        assert!(
            status.0.success(),
            "VMM exit {:?}\n{}\n{}",
            status.0,
            status.1,
            status.2
        );
        assert!(status.1.contains("guest stopped (reset)"), "{}", status.1);
        outputs.push(out);
    }
    let (a, b) = (&outputs[0], &outputs[1]);
    assert_eq!(line_value(a, "host="), "pod-a", "{a}");
    assert_eq!(line_value(b, "host="), "pod-b", "{b}");
    assert!(a.contains("nameserver 10.96.0.10"), "{a}");
    assert_eq!(line_value(a, "addr="), "inet 10.78.0.10/24", "{a}");
    assert_eq!(line_value(b, "addr="), "inet 10.78.0.11/24", "{b}");
    assert_eq!(line_value(a, "mac="), "ether 02:4b:00:00:00:0a", "{a}");
    assert_eq!(line_value(b, "mac="), "ether 02:4b:00:00:00:0b", "{b}");
    let year: u32 = line_value(a, "year=").parse().unwrap();
    assert!(year >= 2025, "wall clock set from the host: {a}");
    assert_ne!(line_value(a, "rand="), line_value(b, "rand="), "{a}\n{b}");
}
