//! Probes of a pod's running containers, driven from its worker: which are due, running them,
//! and what their transitions mean (Ready, Started, a liveness/startup kill).

use std::collections::HashMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::status::{Observed, RuntimeState};
use crate::probe::{self, ContainerProbes, ProbeHandler, ProbeKind, Target, Transition};

/// A container a liveness or startup probe wants restarted.
pub struct Kill {
    /// Container name.
    pub name: String,
    /// CRI id.
    pub id: String,
    /// The probe that failed.
    pub kind: ProbeKind,
}

/// Probe events to publish: (container name, reason, message).
pub type ProbeEvents = Vec<(String, String, String)>;

fn probed_containers(pod: &Pod) -> Vec<Container> {
    let spec = pod.spec.clone().unwrap_or_default();
    let sidecars = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .filter(super::status::is_sidecar);
    spec.containers.into_iter().chain(sidecars).collect()
}

/// Keeps `probes` in step with the running containers in `obs`, runs the due probes, fills
/// `obs.readiness` / `obs.started`, and returns the kills and the events to publish.
pub async fn pass(
    cri: &crate::cri::CriClient,
    pod: &Pod,
    obs: &mut Observed,
    probes: &mut HashMap<String, ContainerProbes>,
    pod_ip: &str,
    started_at: impl Fn(i64) -> Instant,
) -> (Vec<Kill>, ProbeEvents) {
    let containers = probed_containers(pod);
    let label = crate::hooks::pod_label(pod);
    let mut kills = Vec::new();
    let mut events = Vec::new();
    probes.retain(|name, cp| {
        super::status::latest(obs, name)
            .is_some_and(|o| o.state == RuntimeState::Running && o.id == cp.container_id())
    });
    for c in &containers {
        let Some(o) =
            super::status::latest(obs, &c.name).filter(|o| o.state == RuntimeState::Running)
        else {
            continue;
        };
        if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
            continue;
        }
        let cp = probes
            .entry(c.name.clone())
            .or_insert_with(|| ContainerProbes::new(c, o.id.clone(), started_at(o.started_at)));
        let now = Instant::now();
        for kind in cp.due(now) {
            let p = match kind {
                ProbeKind::Liveness => c.liveness_probe.as_ref(),
                ProbeKind::Readiness => c.readiness_probe.as_ref(),
                ProbeKind::Startup => c.startup_probe.as_ref(),
            };
            let Some(p) = p else { continue };
            let Some(handler) = ProbeHandler::of(p) else {
                continue;
            };
            let target = Target {
                container_id: &o.id,
                container: c,
                pod_ip,
                pod: &label,
            };
            let timeout = cp
                .get(kind)
                .map(|s| s.spec().timeout)
                .unwrap_or(std::time::Duration::from_secs(1));
            let t = Instant::now();
            let outcome = probe::run(&handler, &target, cri, timeout).await;
            tracing::debug!(container = %c.name, ?kind, took = ?t.elapsed(), "probe: {outcome:?}");
            if let Some(ev) = outcome.event(kind) {
                events.push((c.name.clone(), ev.reason.to_string(), ev.message));
            }
            if let Some(Transition::Kill(k)) = cp.record(kind, outcome.result(), Instant::now()) {
                kills.push(Kill {
                    name: c.name.clone(),
                    id: o.id.clone(),
                    kind: k,
                });
            }
        }
        if let Some(r) = cp.ready() {
            obs.readiness.insert(c.name.clone(), r);
        }
        if let Some(s) = cp.started() {
            obs.started.insert(c.name.clone(), s);
        }
    }
    (kills, events)
}
