//! Pod status exactly as kubelet computes it from what the runtime reports: phase, conditions,
//! container and init-container statuses. Pure functions over an [`Observed`] snapshot.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// CRI container id.
    pub id: String,
    /// Name in the pod spec.
    pub name: String,
    /// Restart count (the CRI attempt).
    pub attempt: u32,
    /// Runtime state.
    pub state: RuntimeState,
    /// Nanoseconds since the epoch (0 = unset).
    pub started_at: i64,
    /// Nanoseconds since the epoch (0 = unset).
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Runtime's reason once exited (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// Runtime's message (termination message).
    pub message: String,
    /// The image's resolved reference.
    pub image_ref: String,
}

/// CRI container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// The pod's sandbox as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedSandbox {
    /// CRI sandbox id.
    pub id: String,
    /// Whether it is ready (its VM running).
    pub ready: bool,
    /// Pod IPs (primary first).
    pub ips: Vec<String>,
}

/// Everything the status is computed from.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The latest sandbox, if any.
    pub sandbox: Option<ObservedSandbox>,
    /// Every container of the pod the runtime still holds (all attempts).
    pub containers: Vec<ObservedContainer>,
    /// Waiting reasons the agent itself decided (ErrImagePull, CrashLoopBackOff, ...), by name.
    pub waiting: HashMap<String, (String, String)>,
    /// Readiness probe results by container name (absent = no probe or not yet run).
    pub readiness: HashMap<String, bool>,
    /// Startup probe passed, by container name (absent = no startup probe).
    pub started: HashMap<String, bool>,
    /// The node's IP.
    pub host_ip: String,
    /// The pod was rejected at admission: (reason, message). The pod is Failed.
    pub rejected: Option<(String, String)>,
}

/// Prefix of container ids in the status (`<runtime>://<id>` as kubelet writes it).
pub const CONTAINER_ID_SCHEME: &str = "kennel";

fn time(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    Timestamp::from_nanosecond(i128::from(ns)).ok().map(Time)
}

fn attempts<'a>(
    obs: &'a Observed,
    name: &str,
) -> (Option<&'a ObservedContainer>, Option<&'a ObservedContainer>) {
    let mut v: Vec<&ObservedContainer> = obs.containers.iter().filter(|c| c.name == name).collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.attempt));
    (v.first().copied(), v.get(1).copied())
}

/// The latest attempt of container `name`.
pub fn latest<'a>(obs: &'a Observed, name: &str) -> Option<&'a ObservedContainer> {
    attempts(obs, name).0
}

fn terminated(c: &ObservedContainer) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(format!("{CONTAINER_ID_SCHEME}://{}", c.id)),
        exit_code: c.exit_code,
        reason: Some(if c.reason.is_empty() {
            if c.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string()
        } else {
            c.reason.clone()
        }),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: time(c.started_at),
        finished_at: time(c.finished_at),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(
    spec: &Container,
    obs: &Observed,
    default_waiting: &str,
    has_readiness: bool,
) -> ContainerStatus {
    let (last, prev) = attempts(obs, &spec.name);
    let override_ = obs.waiting.get(&spec.name);
    let mut last_state = prev.map(|p| ContainerState {
        terminated: Some(terminated(p)),
        ..Default::default()
    });
    let state = match (last, override_) {
        (Some(c), Some((reason, msg))) if c.state == RuntimeState::Exited => {
            // Waiting to restart: the exited attempt becomes the last state.
            last_state = Some(ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            });
            waiting(reason, Some(msg.clone()))
        }
        (_, Some((reason, msg))) if last.is_none_or(|c| c.state != RuntimeState::Running) => {
            waiting(reason, Some(msg.clone()))
        }
        (Some(c), _) => match c.state {
            RuntimeState::Running => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(c.started_at),
                }),
                ..Default::default()
            },
            RuntimeState::Exited => ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            },
            RuntimeState::Created | RuntimeState::Unknown => waiting("ContainerCreating", None),
        },
        (None, _) => waiting(default_waiting, None),
    };
    let running = last.is_some_and(|c| c.state == RuntimeState::Running);
    let started = running && obs.started.get(&spec.name).copied().unwrap_or(true);
    let ready = started
        && if has_readiness {
            obs.readiness.get(&spec.name).copied().unwrap_or(false)
        } else {
            true
        };
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: last.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: last.map(|c| format!("{CONTAINER_ID_SCHEME}://{}", c.id)),
        restart_count: last.map(|c| c.attempt as i32).unwrap_or(0),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// Whether the init container `c` (of `pod`) is a sidecar: `restartPolicy: Always`.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether the pod has initialized: every init container has done its part (exited 0, or, for
/// sidecars, running and started), or a regular container already exists in the current
/// sandbox, so a sidecar restarting afterwards does not undo it (upstream
/// `GeneratePodInitializedCondition` and `HasAnyActiveRegularContainerStarted`).
pub fn initialized(pod: &Pod, obs: &Observed) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if spec
        .containers
        .iter()
        .any(|c| latest(obs, &c.name).is_some())
    {
        return true;
    }
    spec.init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|c| match latest(obs, &c.name) {
            Some(o) if is_sidecar(c) => {
                o.state == RuntimeState::Running
                    && obs.started.get(&c.name).copied().unwrap_or(true)
            }
            Some(o) => o.state == RuntimeState::Exited && o.exit_code == 0,
            None => false,
        })
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// How a container status counts towards the phase.
enum Seen {
    Missing,
    Running,
    Exited(i32),
    /// Waiting; with the exit code of the previous run, if there was one.
    Waiting(Option<i32>),
    Unknown,
}

fn seen(statuses: &[ContainerStatus], name: &str) -> (Seen, bool) {
    let Some(s) = statuses.iter().find(|s| s.name == name) else {
        return (Seen::Missing, false);
    };
    let started = s.started == Some(true);
    let st = s.state.clone().unwrap_or_default();
    let previous = s
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map(|t| t.exit_code);
    let seen = if st.running.is_some() {
        Seen::Running
    } else if let Some(t) = st.terminated {
        Seen::Exited(t.exit_code)
    } else if st.waiting.is_some() {
        Seen::Waiting(previous)
    } else {
        Seen::Unknown
    };
    (seen, started)
}

/// The pod phase from its container statuses, as kubelet's `getPhase`. `initialized` is whether
/// the pod has initialized before (see [`initialized`]): then sidecars that are restarting
/// or not started yet do not put the pod back into Pending.
pub fn phase(
    pod: &Pod,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    initialized: bool,
) -> &'static str {
    let policy = restart_policy(pod);
    let Some(spec) = pod.spec.as_ref() else {
        return "Pending";
    };
    let (mut pending_init, mut pending_sidecars, mut failed_init) = (0, 0, 0);
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in spec.init_containers.as_deref().unwrap_or_default() {
        let (s, started) = seen(init, &c.name);
        if is_sidecar(c) {
            // Exited sidecars, or sidecars waiting to restart, do not count.
            match s {
                Seen::Missing => unknown += 1,
                Seen::Running => {
                    running += 1;
                    if !started {
                        pending_sidecars += 1;
                    }
                }
                Seen::Exited(_) | Seen::Waiting(Some(_)) => {}
                Seen::Waiting(None) => {
                    pending_sidecars += 1;
                    waiting += 1;
                }
                Seen::Unknown => {
                    pending_sidecars += 1;
                    unknown += 1;
                }
            }
            continue;
        }
        match s {
            Seen::Exited(code) | Seen::Waiting(Some(code)) => {
                if code != 0 {
                    failed_init += 1;
                }
            }
            Seen::Missing | Seen::Running | Seen::Waiting(None) | Seen::Unknown => {
                pending_init += 1
            }
        }
    }
    for c in &spec.containers {
        match seen(app, &c.name).0 {
            Seen::Running => running += 1,
            Seen::Exited(code) => {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting to restart counts as stopped, never as succeeded.
            Seen::Waiting(Some(_)) => stopped += 1,
            Seen::Waiting(None) => waiting += 1,
            Seen::Missing | Seen::Unknown => unknown += 1,
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || (pending_sidecars > 0 && !initialized) || waiting > 0 {
        "Pending"
    } else if running > 0 && unknown == 0 {
        "Running"
    } else if running == 0 && stopped > 0 && unknown == 0 {
        match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

/// A kubelet-owned condition; its transition time is kept while its status holds.
fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: Some(since),
        reason: reason.map(str::to_string),
        ..Default::default()
    }
}

/// The message of an init container inferred to have completed.
const INIT_LOST: &str = "the runtime no longer holds this init container; the pod had \
                         initialized, so it completed";

fn has_readiness(c: &Container) -> bool {
    c.readiness_probe.is_some()
}

/// The full status of `pod` given what was observed; `now` stamps new conditions.
pub fn compute(pod: &Pod, obs: &Observed, now: &Time) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let start_time = old.start_time.clone().or_else(|| Some(now.clone()));
    if let Some((reason, message)) = &obs.rejected {
        return PodStatus {
            phase: Some("Failed".into()),
            reason: Some(reason.clone()),
            message: Some(message.clone()),
            start_time,
            host_ip: Some(obs.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: obs.host_ip.clone(),
            }]),
            ..Default::default()
        };
    }
    let inits = spec.init_containers.clone().unwrap_or_default();
    let init_ok = initialized(pod, obs);
    let mut init_statuses: Vec<ContainerStatus> = inits
        .iter()
        .map(|c| container_status(c, obs, "PodInitializing", has_readiness(c)))
        .collect();
    let regular_created = spec
        .containers
        .iter()
        .any(|c| latest(obs, &c.name).is_some());
    for (s, c) in init_statuses.iter_mut().zip(&inits) {
        // An init container the runtime lost after the regular containers were created ran to
        // completion (upstream convertToAPIContainerStatuses).
        if regular_created && !is_sidecar(c) && latest(obs, &c.name).is_none() {
            s.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    message: Some(INIT_LOST.into()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        // A regular init container is ready once it exited 0 (upstream prober manager).
        if !is_sidecar(c) {
            s.ready = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
        }
    }
    // Not created yet: PodInitializing whenever the pod has init containers, as upstream.
    let default_wait = if inits.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, obs, default_wait, has_readiness(c)))
        .collect();
    let mut phase = phase(pod, &init_statuses, &statuses, init_ok).to_string();
    if let Some(p) = old.phase.as_deref() {
        if matches!(p, "Succeeded" | "Failed") {
            phase = p.to_string();
        }
    }
    // The phase's reason and message stay with it (upstream generateAPIPodStatus).
    let (reason, message) = if old.phase.as_deref() == Some(phase.as_str()) {
        (old.reason.clone(), old.message.clone())
    } else {
        (None, None)
    };
    let sandbox_ready = obs.sandbox.as_ref().is_some_and(|s| s.ready);
    let terminal = matches!(phase.as_str(), "Succeeded" | "Failed");
    // Why the containers are not ready (upstream generate.go): a terminal pod's are never.
    let not_ready = match phase.as_str() {
        "Succeeded" => "PodCompleted",
        "Failed" => "PodFailed",
        _ => "ContainersNotReady",
    };
    let sidecars_ready = init_statuses
        .iter()
        .zip(&inits)
        .filter(|(_, c)| is_sidecar(c))
        .all(|(s, _)| s.ready);
    let containers_ready =
        !terminal && statuses.iter().all(|s| s.ready) && sidecars_ready && init_ok;
    let gates_ok = spec
        .readiness_gates
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|g| {
            old_conditions
                .iter()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
    let ready_reason = if !containers_ready {
        Some(not_ready)
    } else if !gates_ok {
        Some("ReadinessGatesNotReady")
    } else {
        None
    };
    let (init_cond, init_reason) = if phase == "Succeeded" {
        (true, Some("PodCompleted"))
    } else if init_ok {
        (true, None)
    } else {
        (false, Some("ContainersNotInitialized"))
    };
    let mut conditions = vec![
        condition(
            &old_conditions,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            now,
        ),
        condition(&old_conditions, "Initialized", init_cond, init_reason, now),
        condition(
            &old_conditions,
            "Ready",
            containers_ready && gates_ok,
            ready_reason,
            now,
        ),
        condition(
            &old_conditions,
            "ContainersReady",
            containers_ready,
            (!containers_ready).then_some(not_ready),
            now,
        ),
    ];
    // Conditions other writers own (PodScheduled, readiness gates, DisruptionTarget) are kept.
    for c in &old_conditions {
        if !conditions.iter().any(|n| n.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }
    let ips: Vec<String> = obs
        .sandbox
        .as_ref()
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    let ips = if ips.is_empty() {
        old.pod_ips
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.ip)
            .collect()
    } else {
        ips
    };
    PodStatus {
        phase: Some(phase),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: Some(obs.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: obs.host_ip.clone(),
        }]),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time,
        container_statuses: Some(statuses),
        init_container_statuses: (!inits.is_empty()).then_some(init_statuses),
        qos_class: Some(qos_class(pod).into()),
        ..Default::default()
    }
}

/// The pod's QoS class as upstream's `GetPodQOS`: only cpu and memory count, zero quantities
/// count as unset, and a request defaults to the container's limit. BestEffort when no
/// container has any; Guaranteed when every container (init containers too) has cpu and memory
/// limits and the pod's summed requests equal its summed limits; else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    use crate::admit::quantity::{parse_quantity, ParsedQuantity};
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let positive = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| parse_quantity(&q.0).ok())
            .filter(|p| p.nanos() > 0)
    };
    // [cpu, memory], summed; None while no container set it.
    let mut requests: [Option<ParsedQuantity>; 2] = [None, None];
    let mut limits: [Option<ParsedQuantity>; 2] = [None, None];
    let mut guaranteed = true;
    let add = |sum: &mut Option<ParsedQuantity>, q: ParsedQuantity| {
        *sum = Some(sum.unwrap_or_default().saturating_add(q));
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.as_deref().unwrap_or_default())
    {
        for (i, res) in ["cpu", "memory"].into_iter().enumerate() {
            if let Some(q) = positive(crate::admit::effective_request(c, res)) {
                add(&mut requests[i], q);
            }
            let limit = c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(res));
            match positive(limit) {
                Some(q) => add(&mut limits[i], q),
                None => guaranteed = false,
            }
        }
    }
    if requests.iter().chain(&limits).all(Option::is_none) {
        "BestEffort"
    } else if guaranteed && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The CRI attempt for container `name` when the runtime holds none of its runs (a first start,
/// or a restart in a sandbox recreated after its VM died, which took the old runs with it): the
/// restart count goes on from the pod's last written status, as kubelet's does across sandboxes.
pub fn next_attempt_after(pod: &Pod, name: &str, init: bool) -> u32 {
    let statuses = pod.status.as_ref().and_then(|s| {
        if init {
            s.init_container_statuses.as_ref()
        } else {
            s.container_statuses.as_ref()
        }
    });
    let Some(cs) = statuses.and_then(|v| v.iter().find(|c| c.name == name)) else {
        return 0;
    };
    let ran = cs
        .state
        .as_ref()
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        || cs
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some());
    if ran {
        cs.restart_count.max(0) as u32 + 1
    } else {
        cs.restart_count.max(0) as u32
    }
}

#[cfg(test)]
mod tests;
