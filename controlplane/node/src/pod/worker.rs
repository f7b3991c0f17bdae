//! One worker per pod: each pass reads the pod's runtime state, moves it one step toward the
//! spec (sandbox, init containers in order, app containers, restarts with back-off, termination)
//! and writes the status when it changed. Level-triggered: a pass after a crash or an agent
//! restart does the right thing from what the runtime reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;
use tokio::sync::watch;

use super::observe::{observe, sandboxes};
use super::pull::{auth_for, pull_policy, PullError};
use super::spec::{self, SandboxContext};
use super::status::{self, latest, Observed, RuntimeState};
use crate::backoff::Backoff;
use crate::cri::{CriClient, CriClientError};

/// Node-wide state every pod worker shares.
pub struct PodEnv {
    /// API client (the node's credentials).
    pub client: kube::Client,
    /// The runtime.
    pub cri: CriClient,
    /// This node's name.
    pub node_name: String,
    /// This node's IP.
    pub host_ip: String,
    /// Sandbox settings (DNS, logs root).
    pub sandbox: SandboxContext,
    /// Event recorder.
    pub recorder: Recorder,
    /// Restart and image-pull back-off, by `<uid>/<container>`.
    pub backoff: std::sync::Mutex<Backoff>,
    /// The node's allocatable resources (from its last status update).
    pub allocatable: std::sync::Mutex<BTreeMap<String, Quantity>>,
    /// The pods bound to this node (the manager's cache).
    pub pods: kube::runtime::reflector::Store<Pod>,
    /// ServiceAccount tokens of the pods' projected volumes.
    pub tokens: crate::volume::token::TokenManager,
}

/// What a worker remembers between passes (all of it recomputable; losing it on an agent
/// restart costs at most a repeated event).
#[derive(Default)]
struct WorkerState {
    waiting: HashMap<String, (String, String)>,
    rejected: Option<(String, String)>,
    admitted: bool,
    last_written: Option<serde_json::Value>,
    warned_dns: bool,
    /// The sandbox's IPs (the status may not carry them yet when the first container starts).
    pod_ips: Vec<String>,
    /// Probe state per running container name.
    probes: HashMap<String, crate::probe::ContainerProbes>,
}

/// The monotonic instant of a CRI timestamp (nanoseconds since the epoch), given `now`.
fn instant_of(epoch_ns: i64, now: Instant) -> Instant {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ago = wall.saturating_sub(Duration::from_nanos(epoch_ns.max(0) as u64));
    now.checked_sub(ago).unwrap_or(now)
}

/// Admission's view of the node from its allocatable resources.
pub fn node_facts(alloc: &BTreeMap<String, Quantity>) -> crate::admit::NodeFacts {
    let get = |k: &str, f: fn(&Quantity) -> i64| alloc.get(k).map(f).unwrap_or(0);
    crate::admit::NodeFacts {
        allocatable_cpu_millis: get("cpu", spec::quantity_millis),
        allocatable_memory_bytes: get("memory", spec::quantity_bytes),
        allocatable_pods: get("pods", spec::quantity_bytes),
        allocatable_ephemeral_storage_bytes: get("ephemeral-storage", spec::quantity_bytes),
    }
}

/// Seconds a pass waits for news before it runs again (kubelet's resync is similar in spirit).
const RESYNC: Duration = Duration::from_secs(1);

/// Runs the worker for one pod until the pod is gone and its sandbox removed.
pub async fn run(env: Arc<PodEnv>, uid: String, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let mut st = WorkerState::default();
    loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => {
                if let Err(e) = remove_sandboxes(&env, &uid, 2).await {
                    tracing::warn!(%uid, "removing the sandbox of a deleted pod: {e}");
                    tokio::time::sleep(RESYNC).await;
                    continue;
                }
                remove_logs(&env, &uid);
                tracing::info!(%uid, "pod gone; sandbox removed");
                return;
            }
            Some(pod) => {
                // A pass that starts containers can take minutes in an emulated guest; a
                // deletion must not wait for it. The pass is level-triggered, so abandoning it
                // at an await point leaves nothing the next pass does not see and finish.
                let pass = sync(&env, &pod, &mut st);
                let r = if pod.metadata.deletion_timestamp.is_some() {
                    pass.await
                } else {
                    tokio::select! {
                        r = pass => r,
                        _ = deletion_requested(&mut rx) => {
                            tracing::info!(pod = %name_of(&pod), "deletion requested: pass abandoned");
                            continue;
                        }
                    }
                };
                match r {
                    Ok(Flow::Done) => return,
                    Ok(Flow::Again) => {}
                    Err(e) => tracing::warn!(pod = %name_of(&pod), "sync: {e}"),
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Resolves once the pod is gone or marked for deletion (or its sender is dropped).
async fn deletion_requested(rx: &mut watch::Receiver<Option<Arc<Pod>>>) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let deleting = rx
            .borrow()
            .as_ref()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        if deleting {
            return;
        }
    }
}

enum Flow {
    Again,
    Done,
}

/// Errors of one pass (the next pass retries).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The runtime failed.
    #[error("runtime: {0}")]
    Cri(#[from] CriClientError),
    /// The API server failed.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
}

fn name_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn event(
    env: &PodEnv,
    pod: &Pod,
    warning: bool,
    reason: &str,
    note: String,
    field: Option<String>,
) {
    let mut reference = pod.object_ref(&());
    reference.field_path = field;
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        // The recorder folds events with the same action into one series; kubelet's correlator
        // keys on the message too, so a readiness failure does not vanish into a liveness one.
        action: note.chars().take(128).collect(),
        note: Some(note),
        secondary: None,
    };
    if let Err(e) = env.recorder.publish(&ev, &reference).await {
        tracing::debug!("event {reason}: {e}");
    }
}

fn field_path(kind: &str, name: &str) -> Option<String> {
    Some(if kind == "init" {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    })
}

/// Removes the log directory of pod `uid` (`<root>/<ns>_<name>_<uid>`), as kubelet does once a
/// pod is gone.
fn remove_logs(env: &PodEnv, uid: &str) {
    super::volumes::remove(env, uid);
    let suffix = format!("_{uid}");
    let Ok(dir) = std::fs::read_dir(&env.sandbox.logs_root) else {
        return;
    };
    for e in dir.flatten() {
        if e.file_name().to_string_lossy().ends_with(&suffix) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!("removing {}: {err}", e.path().display());
            }
        }
    }
}

/// Stops every container (SIGTERM, SIGKILL after `grace`), then the sandbox, then removes it.
async fn remove_sandboxes(env: &PodEnv, uid: &str, grace: i64) -> Result<(), CriClientError> {
    let obs = observe(&env.cri, uid).await?;
    let stops = obs
        .containers
        .iter()
        .filter(|c| c.state == RuntimeState::Running)
        .map(|c| env.cri.stop_container(&c.id, grace));
    for r in futures::future::join_all(stops).await {
        r?;
    }
    for sb in sandboxes(&env.cri, uid).await? {
        env.cri.stop_sandbox(&sb.id).await?;
        env.cri.remove_sandbox(&sb.id).await?;
    }
    Ok(())
}

async fn sync(env: &PodEnv, pod: &Pod, st: &mut WorkerState) -> Result<Flow, SyncError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        return terminate(env, pod, &uid).await;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let terminal = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
    let mut obs = observe(&env.cri, &uid).await?;
    if !st.admitted && obs.sandbox.is_none() && !terminal && st.rejected.is_none() {
        let others: Vec<Pod> = env
            .pods
            .state()
            .iter()
            .filter(|p| p.metadata.uid.as_deref() != Some(uid.as_str()))
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed") | None | Some("Pending")
                ) || p.status.as_ref().is_some_and(|s| s.start_time.is_some())
            })
            .map(|p| (**p).clone())
            .collect();
        let facts = node_facts(&env.allocatable.lock().expect("allocatable lock"));
        match crate::admit::admit(pod, &others, &facts) {
            Ok(()) => st.admitted = true,
            Err(r) => {
                event(env, pod, true, &r.reason, r.message.clone(), None).await;
                st.rejected = Some((r.reason, r.message));
            }
        }
    } else {
        st.admitted = true;
    }
    if terminal || st.rejected.is_some() {
        // A terminal pod keeps its containers' records (logs) but not its VM.
        if let Some(sb) = obs.sandbox.as_ref().filter(|s| s.ready) {
            env.cri.stop_sandbox(&sb.id).await?;
        }
        obs.rejected = st.rejected.clone();
        write_status(env, pod, obs, st).await?;
        return Ok(Flow::Again);
    }
    if !obs.sandbox.as_ref().is_some_and(|s| s.ready) {
        start_sandbox(env, pod, &uid, st).await?;
        obs = observe(&env.cri, &uid).await?;
    }
    if let Some(sb) = obs.sandbox.clone().filter(|s| s.ready) {
        st.pod_ips = sb.ips.clone();
        let sandbox_cfg = spec::sandbox_config(pod, &env.sandbox, 0);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut init_done = true;
        for c in spec.init_containers.as_deref().unwrap_or_default() {
            let sidecar = status::is_sidecar(c);
            let l = latest(&obs, &c.name).cloned();
            let ok = match &l {
                Some(o) if sidecar => o.state == RuntimeState::Running,
                Some(o) => o.state == RuntimeState::Exited && o.exit_code == 0,
                None => false,
            };
            if ok {
                continue;
            }
            let policy = if sidecar {
                "Always"
            } else {
                restart_policy_init(pod)
            };
            ensure_container(
                env,
                pod,
                &uid,
                c,
                "init",
                l.as_ref(),
                policy,
                &sb.id,
                &sandbox_cfg,
                st,
            )
            .await?;
            if !sidecar {
                init_done = false;
                break;
            }
        }
        if init_done {
            let policy = pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.clone())
                .unwrap_or_else(|| "Always".into());
            for c in &spec.containers {
                let l = latest(&obs, &c.name).cloned();
                if l.as_ref().is_some_and(|o| o.state == RuntimeState::Running) {
                    st.waiting.remove(&c.name);
                    continue;
                }
                ensure_container(
                    env,
                    pod,
                    &uid,
                    c,
                    "app",
                    l.as_ref(),
                    &policy,
                    &sb.id,
                    &sandbox_cfg,
                    st,
                )
                .await?;
            }
        }
        if let Err(msg) = super::volumes::refresh_tokens(env, pod, &st.pod_ips).await {
            event(env, pod, true, "FailedMount", msg, None).await;
        }
        obs = observe(&env.cri, &uid).await?;
        run_probes(env, pod, &mut obs, st).await?;
    }
    write_status(env, pod, obs, st).await?;
    Ok(Flow::Again)
}

/// Runs the due probes; a liveness or startup failure stops the container (preStop first) and
/// the restart policy brings it back.
async fn run_probes(
    env: &PodEnv,
    pod: &Pod,
    obs: &mut Observed,
    st: &mut WorkerState,
) -> Result<(), SyncError> {
    let ip = st.pod_ips.first().cloned().unwrap_or_default();
    let now = Instant::now();
    let (kills, events) = super::probing::pass(&env.cri, pod, obs, &mut st.probes, &ip, |ns| {
        instant_of(ns, now)
    })
    .await;
    for (name, reason, message) in events {
        event(env, pod, true, &reason, message, field_path("app", &name)).await;
    }
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    for k in kills {
        let restart = policy != "Never";
        event(
            env,
            pod,
            false,
            "Killing",
            crate::probe::kill_message(&k.name, k.kind, restart),
            field_path("app", &k.name),
        )
        .await;
        let grace = pod_grace(pod);
        let c = pod_container(pod, &k.name);
        let probe_grace = c
            .as_ref()
            .and_then(|c| match k.kind {
                crate::probe::ProbeKind::Startup => c.startup_probe.clone(),
                _ => c.liveness_probe.clone(),
            })
            .map(|p| crate::probe::kill_grace_seconds(&p, grace))
            .unwrap_or(grace);
        let left = match &c {
            Some(c) => pre_stop(env, pod, c, &k.id, &ip, probe_grace).await,
            None => probe_grace,
        };
        env.cri.stop_container(&k.id, left).await?;
        st.probes.remove(&k.name);
    }
    Ok(())
}

fn pod_grace(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

fn pod_container(pod: &Pod, name: &str) -> Option<Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.as_deref().unwrap_or_default())
        .find(|c| c.name == name)
        .cloned()
}

/// Runs the container's preStop hook within `grace` seconds; returns the seconds left for
/// StopContainer (at least 2, as kubelet).
async fn pre_stop(env: &PodEnv, pod: &Pod, c: &Container, id: &str, ip: &str, grace: i64) -> i64 {
    let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
        return grace;
    };
    let label = crate::hooks::pod_label(pod);
    let target = crate::probe::Target {
        container_id: id,
        container: c,
        pod_ip: ip,
        pod: &label,
    };
    let (left, err) = crate::hooks::run_pre_stop(
        &handler,
        &target,
        &env.cri,
        Duration::from_secs(grace.max(0) as u64),
    )
    .await;
    if let Some(e) = err {
        let kind = crate::hooks::HookKind::PreStop;
        event(
            env,
            pod,
            true,
            kind.failed_reason(),
            e.to_string(),
            field_path("app", &c.name),
        )
        .await;
    }
    left.as_secs() as i64
}

/// Init containers restart on failure unless the pod's policy is Never.
fn restart_policy_init(pod: &Pod) -> &'static str {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => "Never",
        _ => "OnFailure",
    }
}

async fn start_sandbox(
    env: &PodEnv,
    pod: &Pod,
    uid: &str,
    st: &mut WorkerState,
) -> Result<(), SyncError> {
    let existing = sandboxes(&env.cri, uid).await?;
    let attempt = existing.len() as u32;
    for sb in &existing {
        // A sandbox that died takes its containers with it; kubelet recreates the pod's sandbox.
        env.cri.stop_sandbox(&sb.id).await?;
        env.cri.remove_sandbox(&sb.id).await?;
    }
    let key = format!("{uid}/sandbox");
    if let Some(wait) = env
        .backoff
        .lock()
        .expect("backoff lock")
        .in_backoff(&key, Instant::now())
    {
        tracing::debug!(%uid, "sandbox back-off {wait:?}");
        return Ok(());
    }
    let (_, fallback) = spec::dns_config(pod, &env.sandbox);
    if fallback && !st.warned_dns {
        st.warned_dns = true;
        event(env, pod, true, "MissingClusterDNS", "pod: \"ClusterFirst\" policy is specified but no cluster DNS is configured; falling back to \"Default\" policy".into(), None).await;
    }
    let cfg = spec::sandbox_config(pod, &env.sandbox, attempt);
    if let Err(e) = std::fs::create_dir_all(&cfg.log_directory) {
        tracing::warn!("creating {}: {e}", cfg.log_directory);
    }
    tracing::info!(pod = %name_of(pod), attempt, "RunPodSandbox");
    match env.cri.run_sandbox(cfg).await {
        Ok(id) => {
            tracing::info!(pod = %name_of(pod), sandbox = %id, "sandbox running");
            env.backoff.lock().expect("backoff lock").reset(&key);
        }
        Err(e) => {
            env.backoff
                .lock()
                .expect("backoff lock")
                .next(&key, Instant::now());
            event(
                env,
                pod,
                true,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e}"),
                None,
            )
            .await;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ensure_container(
    env: &PodEnv,
    pod: &Pod,
    uid: &str,
    c: &Container,
    kind: &str,
    last: Option<&status::ObservedContainer>,
    policy: &str,
    sandbox: &str,
    sandbox_cfg: &k8s_cri::v1::PodSandboxConfig,
    st: &mut WorkerState,
) -> Result<(), SyncError> {
    let key = format!("{uid}/{}", c.name);
    let attempt = match last {
        // Not in this sandbox: a first start, or a restart in a sandbox recreated after the
        // previous one died, where the count goes on from the pod's status as kubelet's does.
        None => status::next_attempt_after(pod, &c.name, kind == "init"),
        Some(o) => match o.state {
            RuntimeState::Running => return Ok(()),
            RuntimeState::Created | RuntimeState::Unknown => {
                // Created but never started (e.g. the agent died between the two calls).
                env.cri.remove_container(&o.id).await?;
                o.attempt
            }
            RuntimeState::Exited => {
                let restart = match policy {
                    "Always" => true,
                    "OnFailure" => o.exit_code != 0,
                    _ => false,
                };
                if !restart {
                    st.waiting.remove(&c.name);
                    return Ok(());
                }
                let now = Instant::now();
                let exited = instant_of(o.finished_at, now);
                let waiting_for = {
                    let mut b = env.backoff.lock().expect("backoff lock");
                    match b.in_backoff_since(&key, exited, now) {
                        Some(_) => b.get(&key),
                        None => {
                            b.next_since(&key, exited, now);
                            None
                        }
                    }
                };
                if let Some(delay) = waiting_for {
                    let msg = format!(
                        "back-off {} restarting failed container={} pod={}_{}({uid})",
                        crate::backoff::format_duration(delay),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default()
                    );
                    if st.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                        event(
                            env,
                            pod,
                            true,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}_{}({uid})",
                                c.name,
                                pod.metadata.name.as_deref().unwrap_or_default(),
                                pod.metadata.namespace.as_deref().unwrap_or_default()
                            ),
                            field_path(kind, &c.name),
                        )
                        .await;
                    }
                    st.waiting
                        .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
                    return Ok(());
                }
                o.attempt + 1
            }
        },
    };
    if let Err(e) = create_start(env, pod, c, kind, attempt, sandbox, sandbox_cfg, st).await {
        tracing::info!(pod = %name_of(pod), container = %c.name, "not started: {e}");
        return Ok(());
    }
    st.waiting.remove(&c.name);
    // Keep one exited attempt (for `kubectl logs --previous`), remove older ones.
    let obs = observe(&env.cri, uid).await?;
    for o in obs
        .containers
        .iter()
        .filter(|o| o.name == c.name && o.attempt + 1 < attempt)
    {
        env.cri.remove_container(&o.id).await?;
    }
    Ok(())
}

/// Why a container was not started; already reported as a waiting reason and an event.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Pull(#[from] PullError),
    #[error("{0}")]
    Runtime(#[from] CriClientError),
    #[error("{0}")]
    BackOff(String),
}

#[allow(clippy::too_many_arguments)]
async fn create_start(
    env: &PodEnv,
    pod: &Pod,
    c: &Container,
    kind: &str,
    attempt: u32,
    sandbox: &str,
    sandbox_cfg: &k8s_cri::v1::PodSandboxConfig,
    st: &mut WorkerState,
) -> Result<(), StartError> {
    let fp = field_path(kind, &c.name);
    let vars = match resolve_env(env, pod, c, &st.pod_ips).await {
        Ok(v) => v,
        Err(msg) => {
            if st.waiting.get(&c.name).map(|w| &w.1) != Some(&msg) {
                event(
                    env,
                    pod,
                    true,
                    "Failed",
                    format!("Error: {msg}"),
                    fp.clone(),
                )
                .await;
            }
            st.waiting.insert(
                c.name.clone(),
                ("CreateContainerConfigError".into(), msg.clone()),
            );
            return Err(StartError::Config(msg));
        }
    };
    let mounts = match super::volumes::prepare(env, pod, c, &st.pod_ips).await {
        Ok(m) => m,
        Err(msg) => {
            if st.waiting.get(&c.name).map(|w| &w.1) != Some(&msg) {
                event(env, pod, true, "FailedMount", msg.clone(), None).await;
            }
            st.waiting
                .insert(c.name.clone(), ("ContainerCreating".into(), msg.clone()));
            return Err(StartError::Config(msg));
        }
    };
    let image = c.image.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pull_key = format!("{uid}/{}/pull", c.name);
    if let Some(wait) = env
        .backoff
        .lock()
        .expect("backoff lock")
        .in_backoff(&pull_key, Instant::now())
    {
        let msg = format!("Back-off pulling image \"{image}\"");
        st.waiting
            .insert(c.name.clone(), ("ImagePullBackOff".into(), msg.clone()));
        return Err(StartError::BackOff(format!("{msg} ({wait:?})")));
    }
    if let Err(e) = ensure_image(env, pod, c, &image, fp.clone()).await {
        env.backoff
            .lock()
            .expect("backoff lock")
            .next(&pull_key, Instant::now());
        event(env, pod, true, "Failed", e.to_string(), fp.clone()).await;
        let reason = if matches!(e, PullError::NeverPull(_)) {
            "ErrImageNeverPull"
        } else {
            "ErrImagePull"
        };
        st.waiting
            .insert(c.name.clone(), (reason.into(), e.to_string()));
        return Err(e.into());
    }
    env.backoff.lock().expect("backoff lock").reset(&pull_key);
    let mut cfg = spec::container_config(pod, c, kind, attempt, vars);
    cfg.mounts = mounts;
    let id = match env
        .cri
        .create_container(sandbox, cfg, sandbox_cfg.clone())
        .await
    {
        Ok(id) => id,
        Err(e) => {
            event(env, pod, true, "Failed", format!("Error: {e}"), fp.clone()).await;
            st.waiting.insert(
                c.name.clone(),
                ("CreateContainerError".into(), e.to_string()),
            );
            return Err(e.into());
        }
    };
    event(
        env,
        pod,
        false,
        "Created",
        format!("Created container {}", c.name),
        fp.clone(),
    )
    .await;
    if let Err(e) = env.cri.start_container(&id).await {
        event(env, pod, true, "Failed", format!("Error: {e}"), fp.clone()).await;
        st.waiting
            .insert(c.name.clone(), ("RunContainerError".into(), e.to_string()));
        return Err(e.into());
    }
    event(
        env,
        pod,
        false,
        "Started",
        format!("Started container {}", c.name),
        fp.clone(),
    )
    .await;
    if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
        let label = crate::hooks::pod_label(pod);
        let ip = st.pod_ips.first().cloned().unwrap_or_default();
        let target = crate::probe::Target {
            container_id: &id,
            container: c,
            pod_ip: &ip,
            pod: &label,
        };
        if let Err(e) = crate::hooks::run_hook(&handler, &target, &env.cri, Duration::ZERO).await {
            let kind = crate::hooks::HookKind::PostStart;
            event(
                env,
                pod,
                true,
                kind.failed_reason(),
                e.to_string(),
                fp.clone(),
            )
            .await;
            event(
                env,
                pod,
                false,
                "Killing",
                kind.failed_reason().to_string(),
                fp,
            )
            .await;
            env.cri.stop_container(&id, pod_grace(pod)).await?;
            st.waiting.insert(
                c.name.clone(),
                (crate::hooks::POST_START_HOOK_ERROR.into(), e.to_string()),
            );
            return Err(StartError::Config(e.to_string()));
        }
    }
    Ok(())
}

async fn ensure_image(
    env: &PodEnv,
    pod: &Pod,
    c: &Container,
    image: &str,
    fp: Option<String>,
) -> Result<(), PullError> {
    let policy = pull_policy(c);
    let failed = |e: CriClientError| PullError::Failed {
        image: image.to_string(),
        message: match e {
            CriClientError::Status { status, .. } => status.message().to_string(),
            other => other.to_string(),
        },
    };
    if policy != "Always" {
        let present = env.cri.image_present(image).await.map_err(failed)?;
        if present.is_some() {
            if policy != "Never" {
                event(
                    env,
                    pod,
                    false,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                    fp,
                )
                .await;
            }
            return Ok(());
        }
        if policy == "Never" {
            return Err(PullError::NeverPull(image.to_string()));
        }
    }
    event(
        env,
        pod,
        false,
        "Pulling",
        format!("Pulling image \"{image}\""),
        fp.clone(),
    )
    .await;
    let t = Instant::now();
    let secrets = pull_secrets(env, pod).await;
    env.cri
        .pull_image(image, auth_for(image, &secrets))
        .await
        .map_err(failed)?;
    event(
        env,
        pod,
        false,
        "Pulled",
        format!(
            "Successfully pulled image \"{image}\" in {:.3}s",
            t.elapsed().as_secs_f64()
        ),
        fp,
    )
    .await;
    Ok(())
}

async fn pull_secrets(env: &PodEnv, pod: &Pod) -> Vec<Secret> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    let mut out = Vec::new();
    for r in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
    {
        match api.get_opt(&r.name).await {
            Ok(Some(s)) => out.push(s),
            Ok(None) => tracing::warn!("pull secret {ns}/{} not found", r.name),
            Err(e) => tracing::warn!("pull secret {ns}/{}: {e}", r.name),
        }
    }
    out
}

/// The container's environment; an error message names what is missing.
async fn resolve_env(
    env: &PodEnv,
    pod: &Pod,
    c: &Container,
    pod_ips: &[String],
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let refs = crate::env::referenced_objects(pod);
    let mut configmaps = BTreeMap::new();
    let cm_api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    for name in refs.config_maps.keys().cloned() {
        if let Some(cm) = cm_api.get_opt(&name).await.map_err(|e| e.to_string())? {
            configmaps.insert(name, cm);
        }
    }
    let mut secrets = BTreeMap::new();
    let s_api: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    for name in refs.secrets.keys().cloned() {
        if let Some(s) = s_api.get_opt(&name).await.map_err(|e| e.to_string())? {
            secrets.insert(name, s);
        }
    }
    let services: Vec<Service> = Api::<Service>::namespaced(env.client.clone(), &ns)
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    let master = Api::<Service>::namespaced(env.client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .map_err(|e| e.to_string())?;
    let alloc = env.allocatable.lock().expect("allocatable lock").clone();
    let host_ips = vec![env.host_ip.clone()];
    let ctx = crate::env::EnvContext {
        pod,
        node_name: &env.node_name,
        host_ips: &host_ips,
        pod_ips,
        allocatable_cpu: alloc.get("cpu"),
        allocatable_memory: alloc.get("memory"),
        allocatable_ephemeral_storage: alloc.get("ephemeral-storage"),
        config_maps: &configmaps,
        secrets: &secrets,
        services: &services,
        master_service: master.as_ref(),
    };
    crate::env::container_env(&ctx, c).map_err(|e| e.to_string())
}

async fn write_status(
    env: &PodEnv,
    pod: &Pod,
    mut obs: Observed,
    st: &mut WorkerState,
) -> Result<(), SyncError> {
    obs.waiting = st.waiting.clone();
    obs.host_ip = env.host_ip.clone();
    let new = status::compute(pod, &obs, &now());
    let value = serde_json::to_value(&new).unwrap_or_default();
    let current = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    if st.last_written.as_ref() == Some(&value) || current.as_ref() == Some(&value) {
        st.last_written = Some(value);
        return Ok(());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    let name = pod.metadata.name.clone().unwrap_or_default();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": value })),
    )
    .await?;
    st.last_written = Some(value);
    Ok(())
}

/// Graceful deletion: stop the containers within the grace period, remove the sandbox, then
/// delete the pod object for good (grace 0, guarded by its uid), as kubelet does.
async fn terminate(env: &PodEnv, pod: &Pod, uid: &str) -> Result<Flow, SyncError> {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    let obs = observe(&env.cri, uid).await?;
    for c in obs
        .containers
        .iter()
        .filter(|c| c.state == RuntimeState::Running)
    {
        event(
            env,
            pod,
            false,
            "Killing",
            format!("Stopping container {}", c.name),
            field_path("app", &c.name),
        )
        .await;
    }
    let ip = obs
        .sandbox
        .as_ref()
        .and_then(|s| s.ips.first().cloned())
        .unwrap_or_default();
    let hooks = obs
        .containers
        .iter()
        .filter(|o| o.state == RuntimeState::Running)
        .filter_map(|o| pod_container(pod, &o.name).map(|c| (c, o.id.clone())))
        .map(|(c, id)| {
            let ip = ip.clone();
            async move { pre_stop(env, pod, &c, &id, &ip, grace).await }
        });
    let left = futures::future::join_all(hooks).await;
    let grace = left.into_iter().min().unwrap_or(grace).max(2);
    remove_sandboxes(env, uid, grace).await?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    remove_logs(env, uid);
    tracing::info!(pod = %name_of(pod), "terminated and deleted");
    Ok(Flow::Done)
}
