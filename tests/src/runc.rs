//! The runc baseline for the CRI benchmark: the same busybox image run as a plain runc container on the
//! host (create → start → `sleep 3600` running → SIGKILL, wait → delete), timed per step, to print
//! beside kennel-cri's pod-in-a-VM figures.
//!
//! The bundle's `config.json` is what `runc spec` makes, adapted: no terminal, read-only root, the
//! image's environment, new pid/net/ipc/uts/mount namespaces (the new network namespace has only a
//! down loopback: no traffic), default cgroup (named after the container id). Each baseline keeps its
//! own runc state directory (`--root`) under `work`, so runs in parallel tests never collide.
//!
//! Needs root and the Debian package `runc`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The runc binary (Debian package `runc`).
pub const RUNC: &str = "/usr/sbin/runc";

/// How long one step may take before the baseline gives up (this host is slow and shared).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-step wall-clock times of one container lifecycle.
#[derive(Debug, Clone, Default)]
pub struct StepTimes {
    /// `(step, time)` in the order run.
    pub steps: Vec<(&'static str, Duration)>,
}

impl StepTimes {
    /// Sum of all steps.
    pub fn total(&self) -> Duration {
        self.steps.iter().map(|(_, d)| *d).sum()
    }

    /// The time of `step`, if it ran.
    pub fn get(&self, step: &str) -> Option<Duration> {
        self.steps.iter().find(|(s, _)| *s == step).map(|(_, d)| *d)
    }
}

impl fmt::Display for StepTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (step, d) in &self.steps {
            writeln!(f, "{step:<8} {:>9.2} ms", d.as_secs_f64() * 1e3)?;
        }
        write!(
            f,
            "{:<8} {:>9.2} ms",
            "total",
            self.total().as_secs_f64() * 1e3
        )
    }
}

/// An OCI bundle of an unpacked image, ready to run with runc.
#[derive(Debug, Clone)]
pub struct RuncBaseline {
    bundle: PathBuf,
    state_root: PathBuf,
    runc: PathBuf,
}

/// The process part of the OCI config: no terminal, root, `sleep 3600`, default capabilities.
fn process(env: &[String]) -> serde_json::Value {
    let caps = [
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
        "CAP_MKNOD",
        "CAP_SETFCAP",
    ];
    serde_json::json!({
        "terminal": false,
        "user": { "uid": 0, "gid": 0 },
        "args": ["sleep", "3600"],
        "env": env,
        "cwd": "/",
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
        },
        "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
        "noNewPrivileges": true,
    })
}

/// The bundle's `config.json` (OCI runtime spec 1.0).
pub fn oci_config(env: &[String]) -> serde_json::Value {
    let ro = ["nosuid", "noexec", "nodev", "ro"];
    serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": process(env),
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runc-baseline",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ro },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777"] },
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

/// Deletes the container (forcefully) unless disarmed: no container outlives a failed run.
struct Cleanup<'a> {
    baseline: &'a RuncBaseline,
    id: &'a str,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self
                .baseline
                .runc(&["delete", "--force", self.id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// State of a process from `/proc/<pid>/stat`: `None` when gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

impl RuncBaseline {
    /// Unpacks `image` from the store into `work/bundle/rootfs` and writes the bundle's `config.json`
    /// (runc state goes to `work/runc`).
    pub fn prepare(
        busybox_rootfs_from: &images::store::Store,
        image: &str,
        work: &Path,
    ) -> anyhow::Result<Self> {
        let store = busybox_rootfs_from;
        let rec = store
            .resolve(image)
            .with_context(|| format!("looking up {image}"))?
            .with_context(|| format!("image {image} is not in the store"))?;
        let env = store
            .config(&rec)
            .context("reading the image config")?
            .config
            .and_then(|c| c.env)
            .unwrap_or_else(|| vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string()]);
        let bundle = work.join("bundle");
        let rootfs = bundle.join("rootfs");
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)
                .with_context(|| format!("removing old {}", rootfs.display()))?;
        }
        store
            .unpack(&rec, &rootfs)
            .with_context(|| format!("unpacking {image} into {}", rootfs.display()))?;
        let config = serde_json::to_vec_pretty(&oci_config(&env))?;
        std::fs::write(bundle.join("config.json"), config).context("writing config.json")?;
        let state_root = work.join("runc");
        std::fs::create_dir_all(&state_root)?;
        Ok(Self {
            bundle,
            state_root,
            runc: PathBuf::from(RUNC),
        })
    }

    /// The bundle directory (`config.json` + `rootfs/`).
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(&self.state_root).args(args);
        c
    }

    /// Runs runc with `args`, its output to `log` (never to a pipe: a created container inherits runc's
    /// stdio, and would keep a pipe open).
    fn run(&self, args: &[&str], log: &Path) -> anyhow::Result<()> {
        let out = std::fs::File::create(log)?;
        let status = self
            .runc(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(|| format!("running {RUNC} (install runc)"))?;
        if !status.success() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("runc {} failed ({status}): {}", args.join(" "), log.trim());
        }
        Ok(())
    }

    /// `runc create` of `bundle` as `id`; returns the container process's pid.
    fn create(&self, bundle: &str, pid_file: &Path, id: &str, log: &Path) -> anyhow::Result<u32> {
        let pid_arg = pid_file.to_str().context("temp path is not UTF-8")?;
        self.run(
            &["create", "--bundle", bundle, "--pid-file", pid_arg, id],
            log,
        )?;
        std::fs::read_to_string(pid_file)?
            .trim()
            .parse()
            .context("runc wrote a bad pid file")
    }

    /// One container lifecycle named `id`: create, start (until `sleep` runs), stop (SIGKILL, until the
    /// process is gone), delete. The container is removed even when a step fails.
    pub fn run_once(&self, id: &str) -> anyhow::Result<StepTimes> {
        let logs = tempfile::tempdir()?;
        let log = logs.path().join("runc.log");
        let pid_file = logs.path().join("pid");
        let bundle = self.bundle.to_str().context("bundle path is not UTF-8")?;
        let mut guard = Cleanup {
            baseline: self,
            id,
            armed: true,
        };
        let mut times = StepTimes::default();

        let t = Instant::now();
        let pid = self.create(bundle, &pid_file, id, &log)?;
        times.steps.push(("create", t.elapsed()));

        let t = Instant::now();
        self.run(&["start", id], &log)?;
        wait_until("sleep to run in the container", || {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x003600\x00")
        })?;
        times.steps.push(("start", t.elapsed()));

        let t = Instant::now();
        self.run(&["kill", id, "KILL"], &log)?;
        wait_until("the container to stop", || {
            matches!(proc_state(pid), None | Some('Z' | 'X'))
        })?;
        times.steps.push(("stop", t.elapsed()));

        let t = Instant::now();
        self.run(&["delete", id], &log)?;
        times.steps.push(("delete", t.elapsed()));
        guard.armed = false;
        Ok(times)
    }
}

/// Result of one OOM round: `runc start` → the hog's process gone, and the kernel's OOM kills.
#[derive(Debug, Clone, Copy)]
pub struct OomRound {
    /// From `runc start` returning to the container process having exited.
    pub killed_after: Duration,
    /// `oom_kill` of the container's memory cgroup (0 = it ended some other way).
    pub oom_kills: u64,
}

impl RuncBaseline {
    /// Runs `sh -c script` in the same rootfs under a `limit_bytes` memory limit (its own cgroup
    /// `/kennel-oom-<id>`) and times start → exit; reads the cgroup's OOM kill count before
    /// deleting the container.
    pub fn run_oom_once(
        &self,
        id: &str,
        limit_bytes: u64,
        script: &str,
    ) -> anyhow::Result<OomRound> {
        let logs = tempfile::tempdir()?;
        let log = logs.path().join("runc.log");
        let pid_file = logs.path().join("pid");
        let bundle = logs.path().join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.bundle.join("config.json"))?)?;
        config["root"]["path"] = self.bundle.join("rootfs").display().to_string().into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        config["linux"]["resources"]["memory"] =
            serde_json::json!({ "limit": limit_bytes, "swap": limit_bytes });
        let cgroup = format!("/kennel-oom-{id}");
        config["linux"]["cgroupsPath"] = cgroup.clone().into();
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;
        let bundle_arg = bundle.to_str().context("temp path is not UTF-8")?;
        let mut guard = Cleanup {
            baseline: self,
            id,
            armed: true,
        };
        let pid = self.create(bundle_arg, &pid_file, id, &log)?;
        let t = Instant::now();
        self.run(&["start", id], &log)?;
        wait_until("the hog to be killed", || {
            matches!(proc_state(pid), None | Some('Z' | 'X'))
        })?;
        let killed_after = t.elapsed();
        let events = ["memory.oom_control", "memory.events"]
            .iter()
            .flat_map(|f| {
                [
                    Path::new("/sys/fs/cgroup/memory")
                        .join(&cgroup[1..])
                        .join(f),
                    Path::new("/sys/fs/cgroup").join(&cgroup[1..]).join(f),
                ]
            })
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let oom_kills = events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0);
        self.run(&["delete", "--force", id], &log)?;
        guard.armed = false;
        Ok(OomRound {
            killed_after,
            oom_kills,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_a_runc_bundle_config() {
        let c = oci_config(&["PATH=/bin".into()]);
        assert_eq!(c["process"]["args"], serde_json::json!(["sleep", "3600"]));
        assert_eq!(c["root"]["readonly"], true);
        let ns: Vec<_> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(ns.contains(&"network") && ns.contains(&"pid"));
    }

    #[test]
    fn step_times_print_a_row_per_step() {
        let t = StepTimes {
            steps: vec![
                ("create", Duration::from_millis(30)),
                ("start", Duration::from_micros(4500)),
            ],
        };
        let s = t.to_string();
        assert_eq!(s.lines().count(), 3);
        assert!(s.starts_with("create       30.00 ms"), "{s}");
        assert!(s.ends_with("total        34.50 ms"), "{s}");
        assert_eq!(t.get("start"), Some(Duration::from_micros(4500)));
    }
}
