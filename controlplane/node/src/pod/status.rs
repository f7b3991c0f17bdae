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

/// Whether every init container has done its part: exited 0, or (sidecars) started.
pub fn initialized(pod: &Pod, obs: &Observed) -> bool {
    let spec = pod.spec.as_ref();
    spec.map(|s| s.init_containers.as_deref().unwrap_or_default())
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

/// The pod phase from its container statuses (kubelet's `getPhase`).
pub fn phase(
    pod: &Pod,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    initialized: bool,
) -> &'static str {
    let policy = restart_policy(pod);
    if !initialized {
        let failed = init.iter().any(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
                || s.last_state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .is_some_and(|t| t.exit_code != 0)
                    && s.state.as_ref().is_some_and(|st| st.waiting.is_some())
        });
        if failed && policy == "Never" {
            return "Failed";
        }
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in app {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            let last_term = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
            match last_term {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            }
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
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
        reason: if ok { None } else { reason.map(str::to_string) },
        ..Default::default()
    }
}

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
    let init_statuses: Vec<ContainerStatus> = inits
        .iter()
        .map(|c| container_status(c, obs, "PodInitializing", has_readiness(c)))
        .collect();
    let default_wait = if init_ok {
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
    let sandbox_ready = obs.sandbox.as_ref().is_some_and(|s| s.ready);
    let terminal = matches!(phase.as_str(), "Succeeded" | "Failed");
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
    let mut conditions = vec![
        condition(
            &old_conditions,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            now,
        ),
        condition(
            &old_conditions,
            "Initialized",
            init_ok,
            Some("ContainersNotInitialized"),
            now,
        ),
        condition(
            &old_conditions,
            "Ready",
            containers_ready && gates_ok,
            Some(if containers_ready {
                "ReadinessGatesNotReady"
            } else {
                "ContainersNotReady"
            }),
            now,
        ),
        condition(
            &old_conditions,
            "ContainersReady",
            containers_ready,
            Some("ContainersNotReady"),
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

/// The pod's QoS class: Guaranteed (every container has equal cpu and memory requests and
/// limits), BestEffort (none has any), else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = match &pod.spec {
        Some(s) => s,
        None => return "BestEffort",
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.as_deref().unwrap_or_default())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {} // requests default to limits
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests;
