//! The HorizontalPodAutoscaler controller (`autoscaling/v2`, upstream
//! `pkg/controller/podautoscaler`): every HPA is reconciled when it appears or its spec
//! changes and then every sync period (15 s); its target is read and resized through the
//! `scale` subresource; `Resource` and `ContainerResource` metrics come from a pluggable
//! [`MetricsSource`] (the real one reads `metrics.k8s.io/v1beta1` PodMetrics); recommendation
//! and scale-event histories live in memory per HPA, as upstream keeps them.

pub mod behavior;
pub mod calc;
pub mod labels;
pub mod metrics;
pub mod quantity;
pub mod status;
mod sync;
pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::jiff::SignedDuration;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::Controller;
use kube::{Resource, ResourceExt};

pub use calc::{CalcConfig, Tolerances};
pub use metrics::{MetricsApiSource, MetricsSource, PodUsage};
pub use sync::HpaError;

use crate::ctx::{drain, Ctx};
use crate::informer::{Change, Informer};
use crate::selector::Selector;

/// Controller settings (upstream's `--horizontal-pod-autoscaler-*` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaConfig {
    /// How often every HPA is reconciled (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// Tolerance, cpu initialization period, initial readiness delay.
    pub calc: CalcConfig,
    /// Scale-down stabilization when `behavior` does not set one
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min).
    pub downscale_stabilization: SignedDuration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(15),
            calc: CalcConfig::default(),
            downscale_stabilization: SignedDuration::from_secs(300),
        }
    }
}

/// Per-HPA memory: histories and last parsed selectors, keyed `namespace/name`.
#[derive(Default)]
pub struct Memory {
    histories: Mutex<HashMap<String, behavior::History>>,
    selectors: Mutex<HashMap<String, Selector>>,
}

impl Memory {
    fn forget(&self, key: &str) {
        self.histories.lock().expect("hpa lock").remove(key);
        self.selectors.lock().expect("hpa lock").remove(key);
    }
}

/// What the HPA reconciler works with.
pub struct Hpa {
    /// Shared controller state (client, pod informer).
    pub ctx: Arc<Ctx>,
    /// Settings.
    pub cfg: HpaConfig,
    /// Where usage comes from.
    pub metrics: Arc<dyn MetricsSource>,
    memory: Arc<Memory>,
    targets: target::Targets,
    recorder: Recorder,
}

impl Hpa {
    /// Records an event about `hpa` in the background (best effort).
    fn event(&self, hpa: &HorizontalPodAutoscaler, warning: bool, reason: &str, note: String) {
        let reference = hpa.object_ref(&());
        let recorder = self.recorder.clone();
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            // The recorder folds events by reason and action into a series: distinct notes
            // (new sizes) must stay distinct events, as the Ctx recorder does.
            action: note.chars().take(128).collect(),
            note: Some(note),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!("event: {e}");
            }
        });
    }
}

/// The queue key of an HPA: `namespace/name`.
pub fn hpa_key(hpa: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any())
}

/// Runs the controller with upstream's defaults and the `metrics.k8s.io` source (forever).
pub fn controller(ctx: Arc<Ctx>) -> impl std::future::Future<Output = ()> + Send {
    let metrics = Arc::new(MetricsApiSource::new(ctx.client.clone()));
    controller_with(ctx, HpaConfig::default(), metrics)
}

/// Runs the controller with `cfg` and `metrics` (forever). It watches HPAs itself and reads
/// pods from `ctx`'s informer; build it before the informers start.
pub fn controller_with(
    ctx: Arc<Ctx>,
    cfg: HpaConfig,
    metrics: Arc<dyn MetricsSource>,
) -> impl std::future::Future<Output = ()> + Send {
    let hpas: Informer<HorizontalPodAutoscaler> = Informer::new();
    let memory = Arc::new(Memory::default());
    {
        let memory = memory.clone();
        hpas.on_change(move |c| {
            if let Change::Deleted(h) = c {
                memory.forget(&hpa_key(h));
            }
        });
    }
    // New HPAs and spec changes trigger at once; our own status writes do not (the periodic
    // requeue covers everything else, as upstream's resync does).
    let triggers = hpas.subscribe().filter_map(|c| async move {
        match c {
            Change::Added(o) => Some(Ok((*o).clone())),
            Change::Updated { old, new } if old.spec != new.spec => Some(Ok((*new).clone())),
            _ => None,
        }
    });
    let ctrl = Controller::for_stream(triggers, hpas.store());
    let recorder = Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: "horizontal-pod-autoscaler".into(),
            instance: None,
        },
    );
    let state = Arc::new(Hpa {
        ctx: ctx.clone(),
        cfg,
        metrics,
        memory,
        targets: target::Targets::default(),
        recorder,
    });
    async move {
        let informer = hpas.clone().run(Api::all(ctx.client.clone()));
        let run = async move {
            ctx.pods.ready().await;
            hpas.ready().await;
            tracing::info!("horizontal pod autoscaler controller started");
            drain(ctrl.run(reconcile, error_policy, state).boxed()).await;
        };
        tokio::join!(informer, run);
    }
}

/// Reconciles one HPA, then again after the sync period.
pub async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, h: Arc<Hpa>) -> Result<Action, HpaError> {
    sync::reconcile_autoscaler(&hpa, &h).await?;
    Ok(Action::requeue(h.cfg.sync_period))
}

/// Upstream's HPA queue retries a failed key after the sync period, not with backoff.
pub fn error_policy(hpa: Arc<HorizontalPodAutoscaler>, err: &HpaError, h: Arc<Hpa>) -> Action {
    tracing::warn!(hpa = %hpa_key(&hpa), "reconcile failed: {err}");
    Action::requeue(h.cfg.sync_period)
}
