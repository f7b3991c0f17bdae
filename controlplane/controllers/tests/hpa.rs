//! The HorizontalPodAutoscaler controller against the real API server (TLS + token, SQLite),
//! with the Deployment and ReplicaSet controllers and the test kubelet fixture running pods:
//! a test metrics source drives a Deployment 1 → 2 and, after a shortened scale-down
//! stabilization window, back to 1 through the `scale` subresource; the real `metrics.k8s.io`
//! source, with no metrics to serve, yields ScalingActive=False/FailedGetResourceMetric.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kennel_apiserver::testing::TestApiServer;
use kennel_controllers::hpa::{self, HpaConfig, MetricsApiSource, MetricsSource, PodUsage};
use kennel_controllers::Ctx;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// A load of `total` millicores spread evenly over the Running pods the selector matches.
struct Load {
    client: Client,
    total: Arc<AtomicI64>,
}

impl MetricsSource for Load {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, hpa::metrics::MetricsError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let pods = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| hpa::metrics::MetricsError::Fetch(e.to_string()))?;
            let running: Vec<Pod> = pods
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            let each = self.total.load(Ordering::SeqCst) / running.len().max(1) as i64;
            Ok(running
                .iter()
                .map(|p| PodUsage {
                    name: p.name_any(),
                    namespace: namespace.into(),
                    timestamp: Timestamp::now(),
                    window: SignedDuration::from_secs(1),
                    containers: vec![("c".into(), [("cpu".to_string(), each)].into())],
                })
                .collect())
        })
    }
}

/// Settings that keep the test fast: 500 ms sync, no cpu initialization window.
fn fast() -> HpaConfig {
    let mut cfg = HpaConfig {
        sync_period: Duration::from_millis(500),
        ..HpaConfig::default()
    };
    cfg.calc.cpu_initialization_period = SignedDuration::ZERO;
    cfg.calc.initial_readiness_delay = SignedDuration::ZERO;
    cfg
}

/// API server, Deployment + ReplicaSet controllers, the kubelet fixture and the HPA controller.
struct Env {
    _api: TestApiServer,
    client: Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start(metrics: impl FnOnce(Client) -> Arc<dyn MetricsSource>) -> Env {
    let api = TestApiServer::start().await;
    let client = api.client.clone();
    let ctx = Arc::new(Ctx::new(client.clone()));
    // Controllers subscribe to the informers when built, before the informers run.
    let deployments = kennel_controllers::deployment::controller(ctx.clone());
    let replicasets = kennel_controllers::replicaset::controller::<ReplicaSet>(ctx.clone());
    let hpas = hpa::controller_with(ctx.clone(), fast(), metrics(client.clone()));
    let informers = {
        let ctx = ctx.clone();
        async move { ctx.run_informers().await }
    };
    // One task for all of them, as the controller manager runs them: a store's readiness
    // wakes only the task that polled it last.
    let manager = async move {
        tokio::join!(deployments, replicasets, hpas, informers);
    };
    let tasks = vec![
        tokio::spawn(manager),
        tokio::spawn(common::kubelet::run(client.clone())),
    ];
    Env {
        _api: api,
        client,
        tasks,
    }
}

fn deployment(name: &str, replicas: i32, cpu_request: Option<&str>) -> Deployment {
    let resources = match cpu_request {
        Some(r) => json!({"requests": {"cpu": r}}),
        None => json!({}),
    };
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1", "resources": resources}]},
            },
        },
    }))
    .unwrap()
}

fn autoscaler(name: &str, behavior: serde_json::Value) -> HorizontalPodAutoscaler {
    let mut v = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    });
    if !behavior.is_null() {
        v["spec"]["behavior"] = behavior;
    }
    serde_json::from_value(v).unwrap()
}

fn condition(h: &HorizontalPodAutoscaler, type_: &str) -> Option<HorizontalPodAutoscalerCondition> {
    h.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

async fn spec_replicas(api: &Api<Deployment>, name: &str) -> i32 {
    api.get(name)
        .await
        .expect("get deployment")
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(-1)
}

/// Waits until `name`'s condition `type_` has `reason`; returns the HPA.
async fn wait_condition(
    hpas: &Api<HorizontalPodAutoscaler>,
    name: &str,
    type_: &str,
    reason: &str,
) -> HorizontalPodAutoscaler {
    eventually(T, &format!("{name}: {type_} {reason}"), || async {
        let h = hpas.get(name).await.ok()?;
        (condition(&h, type_)?.reason.as_deref() == Some(reason)).then_some(h)
    })
    .await
}

async fn event_notes(client: &Client, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scales_up_on_load_and_back_down_after_the_stabilization_window() {
    let total = Arc::new(AtomicI64::new(90)); // 90 % of one pod's 100m request
    let load = total.clone();
    let env = start(move |client| {
        Arc::new(Load {
            client,
            total: load,
        })
    })
    .await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();
    deploys
        .create(&pp, &deployment("web", 1, Some("100m")))
        .await
        .expect("create deployment");
    let window = json!({"scaleDown": {"stabilizationWindowSeconds": 3}});
    hpas.create(&pp, &autoscaler("web", window))
        .await
        .expect("create hpa");

    // 90 % against a 50 % target: ceil(1.8 × 1) = 2.
    eventually(T, "scale up to 2", || async {
        (spec_replicas(&deploys, "web").await == 2).then_some(())
    })
    .await;
    let h = wait_condition(&hpas, "web", "AbleToScale", "SucceededRescale").await;
    let st = h.status.clone().unwrap();
    assert!(st.last_scale_time.is_some());
    assert_eq!(st.desired_replicas, 2);
    let active = condition(&h, "ScalingActive").unwrap();
    assert_eq!(active.status, "True");
    assert_eq!(active.reason.as_deref(), Some("ValidMetricFound"));
    assert_eq!(
        active.message.as_deref(),
        Some("the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)")
    );
    let m = &st.current_metrics.as_ref().expect("currentMetrics")[0];
    assert_eq!(m.type_, "Resource");
    let cur = &m.resource.as_ref().unwrap().current;
    assert_eq!(cur.average_utilization, Some(90));
    assert_eq!(
        cur.average_value.as_ref().map(|q| q.0.as_str()),
        Some("90m")
    );
    eventually(T, "SuccessfulRescale event", || async {
        event_notes(&env.client, "SuccessfulRescale")
            .await
            .iter()
            .any(|n| n == "New size: 2; reason: cpu resource utilization (percentage of request) above target")
            .then_some(())
    })
    .await;

    // The same load over two pods is 45 %: within tolerance, it stays at 2.
    wait_condition(&hpas, "web", "AbleToScale", "ReadyForNewScale").await;
    eventually(T, "two pods measured", || async {
        let h = hpas.get("web").await.ok()?;
        let st = h.status?;
        let u = st.current_metrics?[0]
            .resource
            .as_ref()?
            .current
            .average_utilization?;
        (u == 45 && st.current_replicas == Some(2)).then_some(())
    })
    .await;
    assert_eq!(spec_replicas(&deploys, "web").await, 2);

    // 10m over two pods is 5 %: held by the 3 s window, then down to 1.
    total.store(10, Ordering::SeqCst);
    let t0 = Instant::now();
    let held = AtomicBool::new(false);
    eventually(T, "scale down to 1", || async {
        if let Ok(h) = hpas.get("web").await {
            if condition(&h, "AbleToScale")
                .and_then(|c| c.reason)
                .as_deref()
                == Some("ScaleDownStabilized")
            {
                held.store(true, Ordering::SeqCst);
            }
        }
        (spec_replicas(&deploys, "web").await == 1).then_some(())
    })
    .await;
    let waited = t0.elapsed();
    assert!(
        held.load(Ordering::SeqCst),
        "the scale-down was never held by the stabilization window"
    );
    assert!(
        waited >= Duration::from_secs(2),
        "scaled down after {waited:?}, inside the 3 s window"
    );
    eventually(T, "scale-down event", || async {
        event_notes(&env.client, "SuccessfulRescale")
            .await
            .iter()
            .any(|n| n == "New size: 1; reason: All metrics below target")
            .then_some(())
    })
    .await;

    // A container without a cpu request: no replica count, upstream's message.
    deploys
        .create(&pp, &deployment("noreq", 1, None))
        .await
        .expect("create deployment");
    hpas.create(&pp, &autoscaler("noreq", serde_json::Value::Null))
        .await
        .expect("create hpa");
    // (Until its pod runs there are no metrics at all; then the missing request shows.)
    let msg = eventually(T, "missing request condition", || async {
        let h = hpas.get("noreq").await.ok()?;
        let c = condition(&h, "ScalingActive")?;
        let msg = c.message.unwrap_or_default();
        (c.reason.as_deref() == Some("FailedGetResourceMetric") && msg.contains("missing request"))
            .then_some(msg)
    })
    .await;
    assert!(
        msg.starts_with("the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu in container c of Pod noreq-"),
        "{msg}"
    );

    // A target scaled to zero disables autoscaling.
    deploys
        .create(&pp, &deployment("zero", 0, Some("100m")))
        .await
        .expect("create deployment");
    hpas.create(&pp, &autoscaler("zero", serde_json::Value::Null))
        .await
        .expect("create hpa");
    let h = wait_condition(&hpas, "zero", "ScalingActive", "ScalingDisabled").await;
    assert_eq!(condition(&h, "ScalingActive").unwrap().status, "False");
    assert_eq!(spec_replicas(&deploys, "zero").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_metrics_api_without_metrics_reports_failed_get_resource_metric() {
    let env = start(|client| Arc::new(MetricsApiSource::new(client))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();
    deploys
        .create(&pp, &deployment("web", 1, Some("100m")))
        .await
        .expect("create deployment");
    hpas.create(&pp, &autoscaler("web", serde_json::Value::Null))
        .await
        .expect("create hpa");
    let h = wait_condition(&hpas, "web", "ScalingActive", "FailedGetResourceMetric").await;
    let c = condition(&h, "ScalingActive").unwrap();
    assert_eq!(c.status, "False");
    let msg = c.message.unwrap();
    assert!(
        msg.starts_with("the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: "),
        "{msg}"
    );
    let able = condition(&h, "AbleToScale").unwrap();
    assert_eq!(
        (able.status.as_str(), able.reason.as_deref()),
        ("True", Some("SucceededGetScale"))
    );
    assert_eq!(h.status.as_ref().unwrap().current_replicas, Some(1));
    eventually(T, "FailedGetResourceMetric event", || async {
        (!event_notes(&env.client, "FailedGetResourceMetric")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(spec_replicas(&deploys, "web").await, 1);
}
