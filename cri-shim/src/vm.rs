//! The `kennel-vmm` process of a sandbox: template build (once per memory size), restore (or
//! cold boot), its control API, liveness by pid + start time, and its host cgroup.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Errors driving kennel-vmm.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A process could not be started.
    #[error("starting {what}")]
    Spawn {
        /// What.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `kennel-vmm template build` failed.
    #[error("template build failed: {0}")]
    Template(String),
    /// The control API refused or failed a request.
    #[error("VMM control API {socket}: {reason}")]
    Api {
        /// Socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Too many devices asked for.
    #[error("{0}")]
    Slots(String),
    /// File trouble.
    #[error("{op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// How VMs are made.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// `kennel-vmm` binary.
    pub vmm: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs with kennel-agent as /init.
    pub initramfs: PathBuf,
    /// Template cache directory.
    pub template_cache: PathBuf,
    /// Run VMMs inside this named network namespace (where the node network lives).
    pub netns: Option<String>,
    /// Empty read-only disk slots per VM (one per distinct image of the pod).
    pub disk_slots: usize,
    /// Empty read-write disk slots per VM after those (one per persistent volume of the pod).
    pub volume_slots: usize,
    /// vCPUs per VM.
    pub vcpus: u8,
}

/// One VM to start.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Directory for sockets, console and the VMM's log.
    pub dir: PathBuf,
    /// Guest RAM, MiB.
    pub mem_mib: u64,
    /// vsock CID.
    pub cid: u32,
    /// Pod tap name and guest MAC.
    pub net: Option<(String, String)>,
}

impl VmSpec {
    /// Control API socket path.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
    /// Hybrid vsock socket path.
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }
    /// Guest console file.
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

/// Builds (or finds in the cache) the template for `mem_mib`; returns its directory.
pub async fn ensure_template(opts: &VmOptions, mem_mib: u64) -> Result<PathBuf, VmError> {
    let mut cmd = tokio::process::Command::new(&opts.vmm);
    cmd.args(["template", "build", "--mem", &mem_mib.to_string()])
        .args(["--vcpus", &opts.vcpus.to_string()])
        .args(["--timeout", "1200", "--kernel"])
        .arg(&opts.kernel)
        .arg("--initrd")
        .arg(&opts.initramfs)
        .arg("--cache")
        .arg(&opts.template_cache);
    disk_slot_args(&mut cmd, opts);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| VmError::Spawn {
            what: format!("{} template build", opts.vmm.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(VmError::Template(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// virtio-mmio devices a kennel-vmm VM can have (`vmm::layout::VIRTIO_SLOTS`: disks + NICs +
/// vsock).
pub const VIRTIO_SLOTS: usize = 19;

/// Checks that `disk_slots` image slots and `volume_slots` volume slots, one NIC and the vsock
/// fit in [`VIRTIO_SLOTS`].
pub fn check_slots(disk_slots: usize, volume_slots: usize) -> Result<(), VmError> {
    if disk_slots + volume_slots + 2 > VIRTIO_SLOTS {
        return Err(VmError::Slots(format!(
            "--disk-slots {disk_slots} + --volume-slots {volume_slots} + a NIC + vsock exceed the {VIRTIO_SLOTS} virtio devices of a VM"
        )));
    }
    Ok(())
}

/// The VM's disk slots, in slot order: `disk_slots` read-only image slots, then
/// `volume_slots` read-write volume slots (the same on template, restore and cold boot).
pub fn disk_slot_specs(opts: &VmOptions) -> Vec<&'static str> {
    let ro = std::iter::repeat_n("empty,ro", opts.disk_slots);
    ro.chain(std::iter::repeat_n("empty,rw", opts.volume_slots))
        .collect()
}

fn disk_slot_args(cmd: &mut tokio::process::Command, opts: &VmOptions) {
    for spec in disk_slot_specs(opts) {
        cmd.args(["--disk", spec]);
    }
}

fn base_command(opts: &VmOptions) -> tokio::process::Command {
    match &opts.netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&opts.vmm);
            c
        }
        None => tokio::process::Command::new(&opts.vmm),
    }
}

fn spawn(
    mut cmd: tokio::process::Command,
    spec: &VmSpec,
) -> Result<tokio::process::Child, VmError> {
    std::fs::create_dir_all(&spec.dir).map_err(|source| VmError::Io {
        op: "create",
        path: spec.dir.clone(),
        source,
    })?;
    for sock in [spec.api_socket(), spec.vsock_socket()] {
        let _ = std::fs::remove_file(sock);
    }
    let log_path = spec.dir.join("vmm.log");
    let log = std::fs::File::create(&log_path).map_err(|source| VmError::Io {
        op: "create",
        path: log_path.clone(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| VmError::Io {
        op: "dup",
        path: log_path,
        source,
    })?;
    cmd.arg("--console")
        .arg(spec.console())
        .arg("--vsock")
        .arg(format!(
            "cid={},socket={}",
            spec.cid,
            spec.vsock_socket().display()
        ))
        .arg("--api-socket")
        .arg(spec.api_socket())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: a signal to kennel-cri's group (Ctrl-C, a service manager
        // stopping it) does not reach the pod VMs, which keep running across a restart.
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|source| VmError::Spawn {
        what: "kennel-vmm".into(),
        source,
    })
}

/// Starts a VM restored from `template`.
pub fn spawn_restore(
    opts: &VmOptions,
    template: &Path,
    spec: &VmSpec,
) -> Result<tokio::process::Child, VmError> {
    let mut cmd = base_command(opts);
    cmd.arg("restore").arg("--snapshot").arg(template);
    disk_slot_args(&mut cmd, opts);
    if let Some((tap, mac)) = &spec.net {
        cmd.arg("--net").arg(format!("tap={tap},mac={mac}"));
    }
    spawn(cmd, spec)
}

/// Cold-boots a VM (the fallback when no template can be built).
pub fn spawn_cold(opts: &VmOptions, spec: &VmSpec) -> Result<tokio::process::Child, VmError> {
    let mut cmd = base_command(opts);
    cmd.arg("run")
        .arg("--kernel")
        .arg(&opts.kernel)
        .arg("--initrd")
        .arg(&opts.initramfs)
        .args(["--mem", &spec.mem_mib.to_string()])
        .args(["--vcpus", &opts.vcpus.to_string()]);
    disk_slot_args(&mut cmd, opts);
    if let Some((tap, mac)) = &spec.net {
        cmd.arg("--net").arg(format!("tap={tap},mac={mac}"));
    }
    spawn(cmd, spec)
}

/// Sends one request to a VMM's control API; returns the JSON reply when `ok`.
pub async fn api_request(
    socket: &Path,
    request: &serde_json::Value,
) -> Result<serde_json::Value, VmError> {
    let err = |reason: String| VmError::Api {
        socket: socket.to_path_buf(),
        reason,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(err(e.to_string())),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut line = serde_json::to_vec(request).map_err(|e| err(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .await
        .map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| err(format!("bad reply {reply:?}: {e}")))?;
    if v.get("ok").and_then(|o| o.as_bool()) != Some(true) {
        let why = v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("request refused");
        return Err(err(why.to_string()));
    }
    Ok(v)
}

/// Attaches `path` as disk `slot` with `serial`.
pub async fn attach_disk(
    socket: &Path,
    slot: usize,
    path: &Path,
    serial: &str,
) -> Result<(), VmError> {
    api_request(
        socket,
        &serde_json::json!({"op": "attach_disk", "slot": slot, "path": path, "serial": serial}),
    )
    .await
    .map(|_| ())
}

/// Empties disk `slot` (the VMM closes the file and lets go of its lock).
pub async fn detach_disk(socket: &Path, slot: usize) -> Result<(), VmError> {
    api_request(
        socket,
        &serde_json::json!({"op": "detach_disk", "slot": slot}),
    )
    .await
    .map(|_| ())
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); start time is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process `pid` that started at `started` still runs.
pub fn alive(pid: i32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// Sends `signal` to `pid` if it is still the process that started at `started`.
pub fn signal(pid: i32, started: u64, signal: nix::sys::signal::Signal) {
    if alive(pid, started) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Moves `pid` into the pod's host cgroup `parent` (kubelet's cgroupfs name, e.g.
/// `/kubepods/burstable/pod<uid>`): on a unified (v2) hierarchy the one directory, on a v1 or
/// hybrid host the `memory`, `cpu`, `cpuacct` and `pids` hierarchies. Best effort: returns the
/// paths it could not join.
pub fn join_cgroup(parent: &str, pid: i32) -> Vec<String> {
    let parent = parent.trim_start_matches('/');
    if parent.is_empty() || parent.split('/').any(|c| c == "..") {
        return vec![format!("invalid cgroup parent {parent:?}")];
    }
    let root = Path::new("/sys/fs/cgroup");
    let dirs: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.join(parent)]
    } else {
        // `cpu` and `cpuacct` are often links to one `cpu,cpuacct` hierarchy: join each once.
        let mut seen = Vec::new();
        for c in ["memory", "cpu", "cpuacct", "pids"] {
            if let Ok(real) = std::fs::canonicalize(root.join(c)) {
                if !seen.contains(&real) {
                    seen.push(real);
                }
            }
        }
        seen.into_iter().map(|d| d.join(parent)).collect()
    };
    let mut failed = Vec::new();
    for dir in dirs {
        let ok = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        if let Err(e) = ok {
            failed.push(format!("{}: {e}", dir.display()));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_one_is_not() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("own start time");
        assert!(alive(me, t));
        assert!(
            !alive(me, t + 1),
            "a different start time means a reused pid"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(start_time(pid).is_none());
    }

    #[test]
    fn slots_must_fit_the_vm() {
        assert!(check_slots(4, 4).is_ok());
        assert!(check_slots(9, 8).is_ok());
        let e = check_slots(10, 8).unwrap_err().to_string();
        assert!(e.contains("--volume-slots 8"), "{e}");
    }

    #[test]
    fn volume_slots_follow_the_image_slots() {
        let opts = VmOptions {
            vmm: "kennel-vmm".into(),
            kernel: "k".into(),
            initramfs: "i".into(),
            template_cache: "t".into(),
            netns: None,
            disk_slots: 2,
            volume_slots: 3,
            vcpus: 1,
        };
        assert_eq!(
            disk_slot_specs(&opts),
            ["empty,ro", "empty,ro", "empty,rw", "empty,rw", "empty,rw"]
        );
    }

    #[test]
    fn cgroup_parent_with_dotdot_is_refused() {
        assert_eq!(join_cgroup("/a/../b", 1).len(), 1);
    }

    #[tokio::test]
    async fn api_errors_name_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            assert!(line.contains("attach_disk"), "{line}");
            w.write_all(b"{\"ok\":false,\"error\":\"slot 9 does not exist\"}\n")
                .await
                .unwrap();
        });
        let err = attach_disk(&sock, 9, Path::new("/x"), "s")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("slot 9 does not exist"), "{err}");
        server.await.unwrap();
    }
}
