//! Containers: create (namespaces + cgroup + rootfs, init waiting), start, exec, wait,
//! signal, stdio, stats, OOM events, remove.

pub mod helper;
pub mod plan;
pub mod stdio;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{broadcast, watch};

use crate::cgroup::{Cgroup, CgroupError, CgroupRoot};
use crate::oomd::{self, PressureTrigger, Strikes};
use crate::reaper::{self, Exit, Reaper};
use crate::sys::spawn::{spawn, SpawnSpec};
use plan::{PlanError, RootfsInput};
use stdio::Stdio;

/// Errors of container operations; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No such container or process.
    #[error("{0} not found")]
    NotFound(String),
    /// The id is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Bad request field.
    #[error(transparent)]
    InvalidArgument(#[from] PlanError),
    /// The container is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Setting up or executing the process failed inside the helper.
    #[error("{0}")]
    Setup(String),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// An OS operation of the agent failed.
    #[error("{op}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let op = op.into();
    move |source| ContainerError::Io { op, source }
}

/// How long a waited exec stays queryable.
const EXEC_RETENTION: Duration = Duration::from_secs(60);

/// A process the agent started (a container's init or an exec).
pub struct Proc {
    /// PID in the agent's namespace.
    pub pid: i32,
    exit: watch::Receiver<Option<Exit>>,
    oom_before: u64,
    /// Stdio of the process.
    pub stdio: Stdio,
}

impl Proc {
    /// The exit status, if the process has ended.
    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }
}

/// Result of waiting for a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitResult {
    /// How it ended.
    pub exit: Exit,
    /// The container's cgroup saw an OOM kill during its life.
    pub oom_killed: bool,
}

/// Resource usage of a container.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// CPU nanoseconds.
    pub cpu_nanos: u64,
    /// Memory bytes.
    pub memory_bytes: u64,
    /// Memory limit (0 = none).
    pub memory_limit: u64,
    /// Processes.
    pub pids: u64,
    /// OOM kills so far.
    pub oom_kills: u64,
}

struct Container {
    cgroup: Cgroup,
    state_dir: PathBuf,
    init: Arc<Proc>,
    /// Start pipe (init waits for one byte) and the status reader; None once started.
    pending: Mutex<Option<(OwnedFd, BufReader<File>)>>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    oom_seen: Mutex<u64>,
    /// OOM kills made by the agent's watchdog (added to the kernel's count).
    watchdog_kills: AtomicU64,
    /// `memory.events` `high` count at the last OOM check.
    high_seen: Mutex<u64>,
    /// The container's OOM watchdog task, if its cgroup has a pressure file.
    watchdog: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Container {
    /// OOM kills of this container: the kernel's and the watchdog's.
    fn oom_kills(&self) -> u64 {
        self.oom_kills_with(self.cgroup.oom_kills())
    }

    fn oom_kills_with(&self, kernel: u64) -> u64 {
        kernel + self.watchdog_kills.load(Ordering::SeqCst)
    }

    /// The agent's OOM check, run every poll with the `memory.events` `high` count: when the
    /// container was throttled at `memory.high` since the last check and the memory reclaim
    /// cannot free (anon, shmem, kernel) has reached it, the container is out of memory; kill it
    /// now instead of letting the kernel reclaim its program text at the hard limit. Only a
    /// rising count costs more file reads.
    fn check_high(&self, id: &str, events: u64) {
        {
            let mut seen = lock(&self.high_seen);
            if events <= *seen {
                return;
            }
            *seen = events;
        }
        let Some(high) = self.cgroup.memory_high() else {
            return;
        };
        let used = self.cgroup.unreclaimable_bytes();
        if used >= high {
            self.oom_kill(
                id,
                &format!("{used} bytes it cannot reclaim, at its memory.high of {high}"),
            );
        }
    }

    /// Kills the whole container as an OOM kill (counted before the kill, so its exit is
    /// already reported as OOMKilled).
    fn oom_kill(&self, id: &str, why: &str) {
        if self.init.exited().is_some() {
            return;
        }
        tracing::warn!("OOM watchdog: killing container {id}: {why}");
        self.watchdog_kills.fetch_add(1, Ordering::SeqCst);
        self.cgroup.kill_all();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.watchdog).take() {
            h.abort();
        }
    }
}

enum Slot {
    Creating,
    Ready(Arc<Container>),
}

/// Settings of the container manager.
pub struct Config {
    /// Where container cgroups go.
    pub cgroup_root: CgroupRoot,
    /// Private state (plans, overlay upper/work dirs).
    pub state_dir: PathBuf,
    /// Also watch the memory pressure of the whole system (`/proc/pressure/memory`) and kill
    /// the container with the highest OOM score when it thrashes out of memory: PID 1 of a
    /// VM only (on a host the host's OOM handling applies).
    pub guest_watchdog: bool,
}

/// All containers of the sandbox.
pub struct Containers {
    cfg: Config,
    reaper: Reaper,
    exe: CString,
    slots: Mutex<HashMap<String, Slot>>,
    oom_tx: broadcast::Sender<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads status lines until `want` (returns its payload), EOF (returns None) or an error line.
fn read_status(r: &mut BufReader<File>, want: &str) -> Result<Option<String>, ContainerError> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .map_err(io("reading helper status"))?;
        if n == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if let Some(msg) = l.strip_prefix("error ") {
            return Err(ContainerError::Setup(msg.to_string()));
        }
        if let Some(rest) = l.strip_prefix(want) {
            return Ok(Some(rest.trim().to_string()));
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ContainerError> + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContainerError::Setup(format!("helper task failed: {e}")))?
}

impl Containers {
    /// Creates the manager and starts the OOM watcher.
    pub fn new(cfg: Config, reaper: Reaper) -> Arc<Self> {
        let (oom_tx, _) = broadcast::channel(256);
        let c = Arc::new(Containers {
            cfg,
            reaper,
            exe: CString::new("/proc/self/exe").unwrap_or_default(),
            slots: Mutex::new(HashMap::new()),
            oom_tx,
        });
        let weak = Arc::downgrade(&c);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match weak.upgrade() {
                    Some(c) => c.poll_oom(),
                    None => break,
                }
            }
        });
        if c.cfg.guest_watchdog {
            let path = Path::new("/proc/pressure/memory");
            match PressureTrigger::arm(path, oomd::STALL, oomd::WINDOW) {
                Ok(t) => {
                    tokio::spawn(watch_guest(Arc::downgrade(&c), t));
                }
                Err(e) => tracing::warn!("no guest OOM watchdog: {e}"),
            }
        }
        c
    }

    /// Arms the OOM watchdog of a new container (cgroup v2 with PSI only).
    fn spawn_watchdog(&self, id: &str, c: &Arc<Container>) {
        let Some(path) = c.cgroup.memory_pressure_file() else {
            return;
        };
        match PressureTrigger::arm(&path, oomd::STALL, oomd::WINDOW) {
            Ok(t) => {
                tracing::debug!("container {id}: OOM watchdog armed on {}", path.display());
                let task = tokio::spawn(watch_container(id.to_string(), Arc::downgrade(c), t));
                *lock(&c.watchdog) = Some(task);
            }
            Err(e) => tracing::warn!("container {id} has no OOM watchdog: {e}"),
        }
    }

    /// Subscribes to OOM events (container ids).
    pub fn oom_events(&self) -> broadcast::Receiver<String> {
        self.oom_tx.subscribe()
    }

    fn poll_oom(&self) {
        for (id, c) in self.ready() {
            let events = c.cgroup.memory_events();
            c.check_high(&id, events.high);
            let n = c.oom_kills_with(events.oom_kill);
            let mut seen = lock(&c.oom_seen);
            while *seen < n {
                *seen += 1;
                let _ = self.oom_tx.send(id.clone());
            }
        }
    }

    fn ready(&self) -> Vec<(String, Arc<Container>)> {
        lock(&self.slots)
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Ready(c) => Some((id.clone(), c.clone())),
                Slot::Creating => None,
            })
            .collect()
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        match lock(&self.slots).get(id) {
            Some(Slot::Ready(c)) => Ok(c.clone()),
            _ => Err(ContainerError::NotFound(format!("container {id:?}"))),
        }
    }

    fn proc(&self, id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Proc>), ContainerError> {
        let c = self.get(id)?;
        if exec_id.is_empty() {
            let p = c.init.clone();
            return Ok((c, p));
        }
        let p = lock(&c.execs).get(exec_id).cloned().ok_or_else(|| {
            ContainerError::NotFound(format!("exec {exec_id:?} in container {id:?}"))
        })?;
        Ok((c, p))
    }

    /// Looks up a process (empty `exec_id` = init).
    pub fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Proc>, ContainerError> {
        self.proc(id, exec_id).map(|(_, p)| p)
    }

    /// Creates container `id` from an OCI spec; its init waits for [`Containers::start`].
    pub async fn create(
        self: &Arc<Self>,
        id: &str,
        spec_json: &[u8],
        rootfs: RootfsInput,
        tty: bool,
    ) -> Result<i32, ContainerError> {
        plan::check_id("container_id", id)?;
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(spec_json).map_err(|e| PlanError {
                field: "oci_spec_json".into(),
                reason: format!("not an OCI runtime spec: {e}"),
            })?;
        {
            let mut slots = lock(&self.slots);
            if slots.contains_key(id) {
                return Err(ContainerError::AlreadyExists(format!("container {id:?}")));
            }
            slots.insert(id.to_string(), Slot::Creating);
        }
        let this = self.clone();
        let id_owned = id.to_string();
        let res = this.create_inner(&id_owned, &spec, rootfs, tty).await;
        let mut slots = lock(&self.slots);
        match res {
            Ok(c) => {
                let pid = c.init.pid;
                self.spawn_watchdog(id, &c);
                slots.insert(id.to_string(), Slot::Ready(c));
                Ok(pid)
            }
            Err(e) => {
                slots.remove(id);
                Err(e)
            }
        }
    }

    async fn create_inner(
        self: &Arc<Self>,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        rootfs: RootfsInput,
        tty: bool,
    ) -> Result<Arc<Container>, ContainerError> {
        let state_dir = self.cfg.state_dir.join("containers").join(id);
        let probe = self.cfg.cgroup_root.cgroup(id);
        let (init_plan, limits) =
            plan::init_plan(spec, &rootfs, &state_dir, probe.procs_files(), tty)?;
        std::fs::create_dir_all(&state_dir)
            .map_err(io(format!("creating {}", state_dir.display())))?;
        let cleanup = |cg: Option<&Cgroup>| {
            if let Some(cg) = cg {
                let _ = cg.remove();
            }
            let _ = std::fs::remove_dir_all(&state_dir);
        };
        let cgroup = match self.cfg.cgroup_root.create(id, &limits) {
            Ok(cg) => cg,
            Err(e) => {
                cleanup(None);
                return Err(e.into());
            }
        };
        let plan_path = state_dir.join("init.json");
        let res = async {
            write_json(&plan_path, &init_plan)?;
            let oom_before = cgroup.oom_kills();
            let (stdio, child) =
                stdio::create(init_plan.process.tty).map_err(io("creating stdio"))?;
            let (status_r, status_w) = stdio::pipe().map_err(io("creating a pipe"))?;
            let (start_r, start_w) = stdio::pipe().map_err(io("creating a pipe"))?;
            let flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
            let pid = self.spawn_helper(
                flags,
                "init-container",
                &plan_path,
                &child,
                &[(status_w.as_raw_fd(), 3), (start_r.as_raw_fd(), 4)],
            )?;
            drop((child, status_w, start_r));
            let exit = self.reaper.watch(pid);
            let mut reader = BufReader::new(File::from(status_r));
            let (ready, reader) = blocking(move || {
                let r = read_status(&mut reader, "ready");
                r.map(|x| (x, reader))
            })
            .await
            .inspect_err(|_| {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            })?;
            if ready.is_none() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(ContainerError::Setup(
                    "container init exited during setup".into(),
                ));
            }
            Ok(Arc::new(Container {
                cgroup: cgroup.clone(),
                state_dir: state_dir.clone(),
                init: Arc::new(Proc {
                    pid,
                    exit,
                    oom_before,
                    stdio,
                }),
                pending: Mutex::new(Some((start_w, reader))),
                execs: Mutex::new(HashMap::new()),
                oom_seen: Mutex::new(oom_before),
                watchdog_kills: AtomicU64::new(0),
                high_seen: Mutex::new(0),
                watchdog: Mutex::new(None),
            }))
        }
        .await;
        if res.is_err() {
            // Give a killed helper a moment to leave the cgroup before removing it.
            for _ in 0..50 {
                if cgroup.pids().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cleanup(Some(&cgroup));
        }
        res
    }

    fn spawn_helper(
        &self,
        flags: libc::c_int,
        mode: &str,
        plan: &Path,
        child: &stdio::ChildStdio,
        extra: &[(i32, i32)],
    ) -> Result<i32, ContainerError> {
        let argv = [
            CString::new("kennel-agent").unwrap_or_default(),
            CString::new(mode).unwrap_or_default(),
            CString::new(plan.as_os_str().as_encoded_bytes())
                .map_err(|_| ContainerError::Setup("NUL in state path".into()))?,
        ];
        let env = [CString::new("RUST_BACKTRACE=0").unwrap_or_default()];
        let mut fds: Vec<(i32, i32)> = child.mapping().to_vec();
        fds.extend_from_slice(extra);
        spawn(&SpawnSpec {
            clone_flags: flags,
            program: &self.exe,
            argv: &argv,
            env: &env,
            fds: &fds,
        })
        .map_err(io(format!("cloning the {mode} helper")))
    }

    /// Lets the container's init execute its program.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let (start_w, mut reader) = lock(&c.pending).take().ok_or_else(|| {
            ContainerError::FailedPrecondition(format!("container {id:?} was already started"))
        })?;
        let mut f = File::from(start_w);
        f.write_all(b"G")
            .map_err(io("signalling the container init"))?;
        drop(f);
        blocking(move || read_status(&mut reader, "\u{0}").map(|_| ())).await
    }

    /// Runs an extra process in a started, running container.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
    ) -> Result<i32, ContainerError> {
        plan::check_id("exec_id", exec_id)?;
        let process = plan::process_from_json(process_json)?;
        let c = self.get(id)?;
        if lock(&c.pending).is_some() {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id:?} is not started"
            )));
        }
        if c.init.exited().is_some() {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id:?} has exited"
            )));
        }
        {
            let execs = lock(&c.execs);
            if execs.contains_key(exec_id) {
                return Err(ContainerError::AlreadyExists(format!(
                    "exec {exec_id:?} in container {id:?}"
                )));
            }
        }
        let plan_path = c.state_dir.join(format!("exec-{exec_id}.json"));
        write_json(
            &plan_path,
            &plan::ExecPlan {
                target_pid: c.init.pid,
                cgroup_procs: c.cgroup.procs_files(),
                process: process.clone(),
            },
        )?;
        let oom_before = c.oom_kills();
        let (stdio, child) = stdio::create(process.tty).map_err(io("creating stdio"))?;
        let (status_r, status_w) = stdio::pipe().map_err(io("creating a pipe"))?;
        let helper = self.spawn_helper(
            0,
            "exec-container",
            &plan_path,
            &child,
            &[(status_w.as_raw_fd(), 3)],
        )?;
        drop((child, status_w));
        let helper_exit = self.reaper.watch(helper);
        let mut reader = BufReader::new(File::from(status_r));
        let res = blocking(move || {
            let pid = read_status(&mut reader, "pid ")?;
            let pid: i32 = pid.and_then(|p| p.parse().ok()).ok_or_else(|| {
                ContainerError::Setup("exec helper exited before starting the process".into())
            })?;
            // EOF once the process executed its program; an error line otherwise.
            match read_status(&mut reader, "\u{0}") {
                Ok(_) => Ok((pid, None)),
                Err(e) => Ok((pid, Some(e))),
            }
        })
        .await;
        let helper_status = reaper::wait(helper_exit).await;
        let _ = std::fs::remove_file(&plan_path);
        let (pid, failed) = res.map_err(|e| match e {
            ContainerError::Setup(msg) => {
                ContainerError::Setup(format!("{msg} (exec helper {helper_status:?})"))
            }
            other => other,
        })?;
        let exit = self.reaper.watch(pid);
        if let Some(e) = failed {
            let _ = reaper::wait(exit).await;
            return Err(e);
        }
        let mut execs = lock(&c.execs);
        if execs.contains_key(exec_id) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(ContainerError::AlreadyExists(format!(
                "exec {exec_id:?} in container {id:?}"
            )));
        }
        execs.insert(
            exec_id.to_string(),
            Arc::new(Proc {
                pid,
                exit,
                oom_before,
                stdio,
            }),
        );
        Ok(pid)
    }

    /// Waits until a process ends.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<WaitResult, ContainerError> {
        let (c, p) = self.proc(id, exec_id)?;
        let exit = reaper::wait(p.exit.clone()).await;
        if !exec_id.is_empty() {
            // Forget a waited exec after a grace period (late readers, repeated waits), so
            // probes that exec every few seconds do not grow the table forever.
            let (c2, exec_id, p2) = (c.clone(), exec_id.to_string(), p.clone());
            tokio::spawn(async move {
                tokio::time::sleep(EXEC_RETENTION).await;
                let mut execs = lock(&c2.execs);
                if execs.get(&exec_id).is_some_and(|cur| Arc::ptr_eq(cur, &p2)) {
                    execs.remove(&exec_id);
                }
            });
        }
        Ok(WaitResult {
            exit,
            oom_killed: c.oom_kills() > p.oom_before,
        })
    }

    /// Sends `signal` to a process, or to every process of the container when `all`.
    pub fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: i32,
        all: bool,
    ) -> Result<(), ContainerError> {
        let sig = Signal::try_from(signal).map_err(|_| PlanError {
            field: "signal".into(),
            reason: format!("{signal} is not a signal number"),
        })?;
        let (c, p) = self.proc(id, exec_id)?;
        if all {
            if sig == Signal::SIGKILL && p.exited().is_none() {
                // Killing the PID namespace's init kills everything in it.
                let _ = kill(Pid::from_raw(c.init.pid), sig);
            }
            for pid in c.cgroup.pids() {
                let _ = kill(Pid::from_raw(pid), sig);
            }
            return Ok(());
        }
        if p.exited().is_some() {
            return Err(ContainerError::FailedPrecondition(format!(
                "process {} has exited",
                p.pid
            )));
        }
        kill(Pid::from_raw(p.pid), sig).map_err(|e| io("kill")(e.into()))
    }

    /// Changes a container's cgroup limits (UpdateContainer); fields not given stay as they are.
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), ContainerError> {
        let limits = plan::limits_from_json(resources_json)?;
        let c = self.get(id)?;
        c.cgroup.apply(&limits)?;
        Ok(())
    }

    /// Resource usage of a container.
    pub fn stats(&self, id: &str) -> Result<Stats, ContainerError> {
        let c = self.get(id)?;
        let (cpu_nanos, memory_bytes, memory_limit, pids) = c.cgroup.stats();
        Ok(Stats {
            cpu_nanos,
            memory_bytes,
            memory_limit,
            pids,
            oom_kills: c.oom_kills(),
        })
    }

    /// Kills whatever is left of a container and removes its cgroup and state.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        drop(lock(&c.pending).take());
        if let Some(h) = lock(&c.watchdog).take() {
            h.abort();
        }
        if c.init.exited().is_none() {
            let _ = kill(Pid::from_raw(c.init.pid), Signal::SIGKILL);
        }
        let waited =
            tokio::time::timeout(Duration::from_secs(30), reaper::wait(c.init.exit.clone())).await;
        if waited.is_err() {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id:?} init {} did not exit after SIGKILL",
                c.init.pid
            )));
        }
        for _ in 0..500 {
            let pids = c.cgroup.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.poll_oom();
        c.cgroup.remove()?;
        if let Err(e) = std::fs::remove_dir_all(&c.state_dir) {
            tracing::warn!("removing {}: {e}", c.state_dir.display());
        }
        lock(&self.slots).remove(id);
        Ok(())
    }

    /// Removes every container (sandbox teardown).
    pub async fn remove_all(&self) {
        for (id, _) in self.ready() {
            if let Err(e) = self.remove(&id).await {
                tracing::warn!("removing container {id}: {e}");
            }
        }
    }
}

/// One container's watchdog: kills it after [`oomd::STRIKES`] consecutive windows of full
/// memory stall in which it kept hitting its limit.
async fn watch_container(id: String, c: Weak<Container>, trigger: PressureTrigger) {
    let mut strikes = Strikes::default();
    let mut hits = match c.upgrade() {
        Some(c) => c.cgroup.limit_hits(),
        None => return,
    };
    loop {
        if let Err(e) = trigger.fired().await {
            tracing::warn!("container {id}: {e}");
            return;
        }
        let Some(c) = c.upgrade() else { return };
        let now_hits = c.cgroup.limit_hits();
        let at_limit = now_hits > hits;
        tracing::info!(
            "container {id}: full memory stall over {:?} in {:?}; limit hits {hits} -> {now_hits}",
            oomd::STALL,
            oomd::WINDOW
        );
        hits = now_hits;
        if strikes.fired(Instant::now(), at_limit) {
            c.oom_kill(
                &id,
                &format!(
                    "stalled on memory at its limit for {} windows of {:?}",
                    oomd::STRIKES,
                    oomd::WINDOW
                ),
            );
        }
    }
}

/// The guest's watchdog: when the whole guest stalls on memory while nearly out of it, kills
/// the container holding the process with the highest OOM score.
async fn watch_guest(containers: Weak<Containers>, trigger: PressureTrigger) {
    let mut strikes = Strikes::default();
    loop {
        if let Err(e) = trigger.fired().await {
            tracing::warn!("guest OOM watchdog: {e}");
            return;
        }
        let Some(cs) = containers.upgrade() else {
            return;
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        if !strikes.fired(Instant::now(), oomd::guest_out_of_memory(&meminfo)) {
            continue;
        }
        let candidates: Vec<_> = cs
            .ready()
            .into_iter()
            .filter(|(_, c)| c.init.exited().is_none())
            .map(|(id, c)| {
                let score = oomd::highest_oom_score(&c.cgroup.pids());
                ((id, c), score)
            })
            .collect();
        if let Some((id, c)) = oomd::pick_victim(&candidates) {
            c.oom_kill(&id, "the guest is out of memory and thrashing");
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ContainerError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ContainerError::Setup(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(io(format!("writing {}", path.display())))
}
