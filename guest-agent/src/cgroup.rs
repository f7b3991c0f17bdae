//! Container cgroups. In the guest the agent mounts cgroup v2 and uses it; on a host that
//! still binds cpu/memory/pids to cgroup v1 hierarchies (hybrid mode) the same operations go
//! to the v1 controller directories, so host tests enforce real limits too.

use std::fs;
use std::path::{Path, PathBuf};

const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Errors handling cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Neither cgroup v2 nor v1 controller hierarchies were found.
    #[error("no usable cgroup hierarchy for {0}")]
    NoHierarchy(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where container cgroups are created.
#[derive(Debug, Clone)]
pub enum CgroupRoot {
    /// Unified hierarchy: containers are `<dir>/<id>`.
    V2(PathBuf),
    /// Hybrid/v1: containers are `<mount>/<controller>/<name>/<id>`.
    V1 {
        /// Directory holding the controller mounts (usually /sys/fs/cgroup).
        mount: PathBuf,
        /// Name of the agent's parent group in each controller.
        name: String,
    },
}

/// Resource limits of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// memory.max in bytes.
    pub memory_bytes: Option<u64>,
    /// cpu.max quota and period in microseconds.
    pub cpu_quota_period: Option<(u64, u64)>,
    /// pids.max.
    pub pids: Option<u64>,
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

impl CgroupRoot {
    /// Picks the layout for `dir` (e.g. /sys/fs/cgroup/kennel) and creates the parent group.
    pub fn open(dir: &Path) -> Result<Self, CgroupError> {
        let parent = dir
            .parent()
            .ok_or_else(|| CgroupError::NoHierarchy(dir.to_path_buf()))?;
        if is_cgroup2(parent) {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            // Delegate the controllers to the agent's group and to the containers below it.
            for d in [parent, dir] {
                let f = d.join("cgroup.subtree_control");
                for c in ["+cpu", "+memory", "+pids"] {
                    if let Err(e) = fs::write(&f, c) {
                        tracing::warn!("enabling {c} in {}: {e}", f.display());
                    }
                }
            }
            return Ok(CgroupRoot::V2(dir.to_path_buf()));
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CgroupError::NoHierarchy(dir.to_path_buf()))?
            .to_string();
        if !parent.join("memory").join("memory.limit_in_bytes").exists() {
            return Err(CgroupError::NoHierarchy(dir.to_path_buf()));
        }
        for c in V1_CONTROLLERS {
            let base = parent.join(c);
            if base.exists() {
                let d = base.join(&name);
                fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
            }
        }
        Ok(CgroupRoot::V1 {
            mount: parent.to_path_buf(),
            name,
        })
    }

    /// Creates the cgroup of container `id` with `limits`.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let cg = self.cgroup(id);
        for d in cg.dirs() {
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        if let Cgroup::V2(d) = &cg {
            // An OOM kill takes the whole container, as kubelet asks on cgroup v2.
            if d.join("memory.oom.group").exists() {
                Cgroup::write(d, "memory.oom.group", "1")?;
            }
        }
        cg.apply(limits)?;
        Ok(cg)
    }

    /// The cgroup of container `id` (not created).
    pub fn cgroup(&self, id: &str) -> Cgroup {
        match self {
            CgroupRoot::V2(dir) => Cgroup::V2(dir.join(id)),
            CgroupRoot::V1 { mount, name } => Cgroup::V1(
                V1_CONTROLLERS
                    .iter()
                    .map(|c| (*c, mount.join(c).join(name).join(id)))
                    .filter(|(c, _)| mount.join(c).exists())
                    .collect(),
            ),
        }
    }

    /// Removes the agent's parent group (best effort; used when not PID 1).
    pub fn remove(&self) {
        let dirs: Vec<PathBuf> = match self {
            CgroupRoot::V2(d) => vec![d.clone()],
            CgroupRoot::V1 { mount, name } => V1_CONTROLLERS
                .iter()
                .map(|c| mount.join(c).join(name))
                .collect(),
        };
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

/// `memory.high` for a container limit of `max` bytes: the kernel throttles and reclaims from
/// there, and the agent's OOM check (unreclaimable memory at or above it) kills before the hard
/// limit, where reclaim of the container's own program text can thrash for minutes.
pub fn high_for(max: u64) -> u64 {
    max - max / 16
}

/// Parses `memory.stat`: bytes that reclaim cannot free without swap (everything but clean and
/// dirty file pages that are not shmem, and reclaimable slab).
pub fn unreclaimable(current: u64, stat: &str) -> u64 {
    let key = |k: &str| {
        stat.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(k)).then(|| it.next()?.parse::<u64>().ok())?
            })
            .unwrap_or(0)
    };
    let file = key("file").saturating_sub(key("shmem"));
    current
        .saturating_sub(file)
        .saturating_sub(key("slab_reclaimable"))
}

/// Counters of `memory.events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    /// OOM kills.
    pub oom_kill: u64,
    /// Times the cgroup went over `memory.high` (0 on v1).
    pub high: u64,
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub enum Cgroup {
    /// Unified directory.
    V2(PathBuf),
    /// Directory per v1 controller.
    V1(Vec<(&'static str, PathBuf)>),
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    key_in(&fs::read_to_string(path).ok()?, key)
}

fn key_in(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

impl Cgroup {
    fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V2(d) => vec![d.clone()],
            Cgroup::V1(v) => v.iter().map(|(_, d)| d.clone()).collect(),
        }
    }

    fn v1(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(v) => v
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, d)| d.as_path()),
            Cgroup::V2(_) => None,
        }
    }

    fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        let p = dir.join(file);
        fs::write(&p, value).map_err(io_err("writing", &p))
    }

    /// Writes the given limits (unset fields are left as they are).
    pub fn apply(&self, l: &Limits) -> Result<(), CgroupError> {
        match self {
            Cgroup::V2(d) => {
                if let Some(m) = l.memory_bytes {
                    if d.join("memory.high").exists() {
                        // Lower the throttle first, so a shrinking limit never leaves high > max.
                        Self::write(d, "memory.high", &high_for(m).to_string())?;
                    }
                    Self::write(d, "memory.max", &m.to_string())?;
                    if d.join("memory.swap.max").exists() {
                        Self::write(d, "memory.swap.max", "0")?;
                    }
                }
                if let Some((q, p)) = l.cpu_quota_period {
                    Self::write(d, "cpu.max", &format!("{q} {p}"))?;
                }
                if let Some(n) = l.pids {
                    Self::write(d, "pids.max", &n.to_string())?;
                }
            }
            Cgroup::V1(_) => {
                if let (Some(m), Some(d)) = (l.memory_bytes, self.v1("memory")) {
                    Self::write(d, "memory.limit_in_bytes", &m.to_string())?;
                }
                if let (Some((q, p)), Some(d)) = (l.cpu_quota_period, self.v1("cpu")) {
                    Self::write(d, "cpu.cfs_period_us", &p.to_string())?;
                    Self::write(d, "cpu.cfs_quota_us", &q.to_string())?;
                }
                if let (Some(n), Some(d)) = (l.pids, self.v1("pids")) {
                    Self::write(d, "pids.max", &n.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes itself into to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// PIDs currently in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let Some(f) = self.procs_files().into_iter().next() else {
            return Vec::new();
        };
        fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Number of OOM kills in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        self.memory_events().oom_kill
    }

    /// The OOM kill and `memory.high` counts, from one read of `memory.events` (v2) or
    /// `memory.oom_control` (v1, where `high` is 0): the agent polls this for every container.
    pub fn memory_events(&self) -> MemoryEvents {
        let file = match self {
            Cgroup::V2(d) => d.join("memory.events"),
            Cgroup::V1(_) => match self.v1("memory") {
                Some(d) => d.join("memory.oom_control"),
                None => return MemoryEvents::default(),
            },
        };
        let text = fs::read_to_string(&file).unwrap_or_default();
        MemoryEvents {
            oom_kill: key_in(&text, "oom_kill").unwrap_or(0),
            high: key_in(&text, "high").unwrap_or(0),
        }
    }

    /// `memory.high` in bytes (cgroup v2). None on v1 or without a limit.
    pub fn memory_high(&self) -> Option<u64> {
        let Cgroup::V2(d) = self else { return None };
        read_u64(&d.join("memory.high"))
    }

    /// Unreclaimable bytes of the cgroup now (v2; 0 elsewhere).
    pub fn unreclaimable_bytes(&self) -> u64 {
        let Cgroup::V2(d) = self else { return 0 };
        let current = read_u64(&d.join("memory.current")).unwrap_or(0);
        let stat = fs::read_to_string(d.join("memory.stat")).unwrap_or_default();
        unreclaimable(current, &stat)
    }

    /// The cgroup's `memory.pressure` (cgroup v2 on a kernel with PSI), for the OOM watchdog.
    pub fn memory_pressure_file(&self) -> Option<PathBuf> {
        match self {
            Cgroup::V2(d) => Some(d.join("memory.pressure")).filter(|p| p.exists()),
            Cgroup::V1(_) => None,
        }
    }

    /// How many times a charge hit the memory limit so far (`memory.events` `max`; v2 only).
    pub fn limit_hits(&self) -> u64 {
        match self {
            Cgroup::V2(d) => read_key(&d.join("memory.events"), "max").unwrap_or(0),
            Cgroup::V1(_) => 0,
        }
    }

    /// Kills every process of the cgroup at once (`cgroup.kill`, or SIGKILL one by one).
    pub fn kill_all(&self) {
        if let Cgroup::V2(d) = self {
            if fs::write(d.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// (cpu nanoseconds, memory bytes, memory limit bytes or 0, pids).
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        match self {
            Cgroup::V2(d) => {
                let cpu = read_key(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
                let mem = read_u64(&d.join("memory.current")).unwrap_or(0);
                let limit = read_u64(&d.join("memory.max")).unwrap_or(0);
                let pids = read_u64(&d.join("pids.current")).unwrap_or(0);
                (cpu, mem, limit, pids)
            }
            Cgroup::V1(_) => {
                let cpu = self
                    .v1("cpuacct")
                    .and_then(|d| read_u64(&d.join("cpuacct.usage")))
                    .unwrap_or(0);
                let (mem, mut limit) = self
                    .v1("memory")
                    .map(|d| {
                        (
                            read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0),
                            read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0),
                        )
                    })
                    .unwrap_or((0, 0));
                // v1 reports "unlimited" as a huge page-aligned number.
                if limit >= (i64::MAX as u64) / 2 {
                    limit = 0;
                }
                let pids = self
                    .v1("pids")
                    .and_then(|d| read_u64(&d.join("pids.current")))
                    .unwrap_or(0);
                (cpu, mem, limit, pids)
            }
        }
    }

    /// Removes the cgroup directories (they must be empty of processes).
    pub fn remove(&self) -> Result<(), CgroupError> {
        for d in self.dirs() {
            match fs::remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        op: "removing",
                        path: d,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keyed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        fs::write(&f, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(read_key(&f, "oom_kill"), Some(1));
        assert_eq!(read_key(&f, "oom"), Some(2));
        assert_eq!(read_key(&f, "missing"), None);
    }

    #[test]
    fn unreclaimable_memory_leaves_out_file_pages_and_reclaimable_slab() {
        let stat = "anon 15000000\nfile 3000000\nshmem 1000000\nslab_reclaimable 200000\n";
        // 20 MB in use: 2 MB of it are non-shmem file pages, 0.2 MB reclaimable slab.
        assert_eq!(unreclaimable(20_000_000, stat), 17_800_000);
        assert_eq!(unreclaimable(1_000, stat), 0);
        assert_eq!(high_for(16 << 20), 15 << 20);
    }
}
