//! The scheduler's volume plugins against the real API server with simulated nodes: a missing
//! claim and an unbound Immediate claim keep the pod Pending with upstream's messages (and the
//! claim's arrival retries it); a WaitForFirstConsumer claim of a provisioning class gets the
//! chosen node as `volume.kubernetes.io/selected-node` and the pod binds once the claim is Bound
//! (the test plays the provisioner); a static PV with node affinity pulls the pod to its node
//! and gets its `claimRef` from the scheduler (the test plays the PV controller's last step); a
//! ReadWriteOncePod claim admits one pod; a PreBind that times out reports `SchedulerError`.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kennel_scheduler::sim::{self, SimConfig};
use kennel_scheduler::SchedulerConfig;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn sim_cfg(nodes: usize) -> SimConfig {
    SimConfig {
        nodes,
        name_prefix: "node-".into(),
        cpu: "8".into(),
        memory: "8Gi".into(),
        pod_ready_delay: Duration::from_millis(200),
        ..Default::default()
    }
}

fn sched() -> SchedulerConfig {
    SchedulerConfig {
        identity: "vol".into(),
        leader_elect: false,
        ..Default::default()
    }
}

async fn cluster(nodes: usize) -> (Cluster, Task) {
    let c = Cluster::start().await;
    let sim = spawn(sim::run(sim_cfg(nodes), c.client.clone()));
    let api: Api<Node> = Api::all(c.client.clone());
    for _ in 0..200 {
        if api
            .list(&Default::default())
            .await
            .map_or(0, |l| l.items.len())
            >= nodes
        {
            return (c, sim);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nodes not registered");
}

fn claims(c: &Cluster) -> Api<PersistentVolumeClaim> {
    Api::namespaced(c.client.clone(), "default")
}

fn pvs(c: &Cluster) -> Api<PersistentVolume> {
    Api::all(c.client.clone())
}

async fn class(c: &Cluster, name: &str, provisioner: &str, mode: &str) {
    let sc: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode}))
    .unwrap();
    Api::<StorageClass>::all(c.client.clone())
        .create(&PostParams::default(), &sc)
        .await
        .expect("create class");
}

async fn claim(c: &Cluster, name: &str, class: &str, mode: &str) -> PersistentVolumeClaim {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"storageClassName": class, "accessModes": [mode],
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    claims(c)
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create claim")
}

/// Creates a PV (phase Available), optionally pinned to a node and pre-bound to a claim.
async fn pv(
    c: &Cluster,
    name: &str,
    class: &str,
    mode: &str,
    node: Option<&str>,
    to: Option<&PersistentVolumeClaim>,
) {
    let mut spec = json!({"storageClassName": class, "accessModes": [mode],
        "capacity": {"storage": "1Gi"}, "hostPath": {"path": format!("/tmp/{name}")}});
    if let Some(n) = node {
        spec["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [n]}]}]}});
    }
    if let Some(cl) = to {
        spec["claimRef"] = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": "default", "name": cl.metadata.name, "uid": cl.metadata.uid});
    }
    let v: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}))
    .unwrap();
    pvs(c)
        .create(&PostParams::default(), &v)
        .await
        .expect("create pv");
    let phase = if to.is_some() { "Bound" } else { "Available" };
    pvs(c)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await
        .expect("pv status");
}

/// What the PV controller does last: the claim names the PV and is Bound.
async fn bind_claim(c: &Cluster, claim: &str, pv: &str) {
    claims(c)
        .patch(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeName": pv}})),
        )
        .await
        .expect("claim volumeName");
    claims(c)
        .patch_status(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("claim status");
}

fn with_claim(claim: &str) -> Value {
    json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]})
}

/// Polls `f` on `get()` until it returns Some, or panics after `secs`.
async fn wait_for<T, O: std::fmt::Debug, F, Fut>(
    what: &str,
    secs: u64,
    get: F,
    f: impl Fn(&O) -> Option<T>,
) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<O, kube::Error>>,
{
    let mut last = None;
    for _ in 0..secs * 10 {
        if let Ok(o) = get().await {
            if let Some(v) = f(&o) {
                return v;
            }
            last = Some(o);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} not reached in {secs}s: {last:?}");
}

fn selected_node(c: &PersistentVolumeClaim) -> Option<String> {
    c.metadata.annotations.as_ref()?.get(SELECTED_NODE).cloned()
}

/// The PodScheduled=False condition's (reason, message).
fn not_scheduled(p: &Pod) -> Option<(String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some((c.reason.clone()?, c.message.clone()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unbound_immediate_claims_keep_the_pod_pending() {
    let (c, _sim) = cluster(2).await;
    let _s = spawn(kennel_scheduler::run(sched(), c.client.clone()));
    c.create_pod("web", json!({}), with_claim("data")).await;
    let msg = c.wait_pod("web", 20, unschedulable_message).await;
    assert_eq!(
        msg,
        "0/2 nodes are available: persistentvolumeclaim \"data\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // The claim's arrival (an Immediate class, not bound yet) retries the pod at once.
    class(&c, "now", "test.kennel.dev/disk", "Immediate").await;
    claim(&c, "data", "now", "ReadWriteOnce").await;
    let msg = c
        .wait_pod("web", 20, |p| {
            unschedulable_message(p).filter(|m| !m.contains("not found"))
        })
        .await;
    assert_eq!(
        msg,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    assert!(node_of(&c.pods().get("web").await.unwrap()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_first_consumer_claim_gets_the_selected_node() {
    let (c, _sim) = cluster(3).await;
    let _s = spawn(kennel_scheduler::run(sched(), c.client.clone()));
    class(&c, "local", "test.kennel.dev/disk", "WaitForFirstConsumer").await;
    claim(&c, "data", "local", "ReadWriteOnce").await;
    c.create_pod("web", json!({}), with_claim("data")).await;
    let node = wait_for(
        "selected-node",
        20,
        || async { claims(&c).get("data").await },
        selected_node,
    )
    .await;
    assert!(node.starts_with("node-"), "{node}");
    // PreBind waits for the provisioner: the pod is not bound yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node_of(&c.pods().get("web").await.unwrap()).is_none());
    // Play the provisioner: a PV on the selected node, bound to the claim.
    let pvc = claims(&c).get("data").await.unwrap();
    pv(
        &c,
        "pvc-data",
        "local",
        "ReadWriteOnce",
        Some(&node),
        Some(&pvc),
    )
    .await;
    bind_claim(&c, "data", "pvc-data").await;
    assert_eq!(c.wait_pod("web", 20, node_of).await, node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pv_node_affinity_places_the_pod_and_sets_claim_ref() {
    let (c, _sim) = cluster(3).await;
    let _s = spawn(kennel_scheduler::run(sched(), c.client.clone()));
    class(
        &c,
        "static",
        "kubernetes.io/no-provisioner",
        "WaitForFirstConsumer",
    )
    .await;
    pv(
        &c,
        "local-2",
        "static",
        "ReadWriteOnce",
        Some("node-2"),
        None,
    )
    .await;
    let pvc = claim(&c, "data", "static", "ReadWriteOnce").await;
    c.create_pod("db", json!({}), with_claim("data")).await;
    let v = wait_for(
        "claimRef",
        20,
        || async { pvs(&c).get("local-2").await },
        |v: &PersistentVolume| v.spec.as_ref()?.claim_ref.clone().map(|r| (r, v.clone())),
    )
    .await;
    let (r, v) = v;
    assert_eq!(r.name.as_deref(), Some("data"));
    assert_eq!(r.namespace.as_deref(), Some("default"));
    assert_eq!(r.uid, pvc.metadata.uid);
    assert_eq!(
        v.metadata.annotations.unwrap()["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    assert!(node_of(&c.pods().get("db").await.unwrap()).is_none());
    // The PV controller completes the binding; then the pod is bound to the PV's node.
    bind_claim(&c, "data", "local-2").await;
    assert_eq!(c.wait_pod("db", 20, node_of).await, "node-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_once_pod_claim_admits_one_pod() {
    let (c, _sim) = cluster(2).await;
    let _s = spawn(kennel_scheduler::run(sched(), c.client.clone()));
    class(&c, "now", "test.kennel.dev/disk", "Immediate").await;
    let pvc = claim(&c, "solo", "now", "ReadWriteOncePod").await;
    pv(&c, "pv-solo", "now", "ReadWriteOncePod", None, Some(&pvc)).await;
    bind_claim(&c, "solo", "pv-solo").await;
    c.create_pod("first", json!({}), with_claim("solo")).await;
    c.wait_pod("first", 20, node_of).await;
    c.create_pod("second", json!({}), with_claim("solo")).await;
    let msg = c.wait_pod("second", 20, unschedulable_message).await;
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    assert!(node_of(&c.pods().get("second").await.unwrap()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_bind_timeout_reports_scheduler_error_and_retries() {
    let (c, _sim) = cluster(2).await;
    let cfg = SchedulerConfig {
        bind_timeout: Duration::from_secs(2),
        ..sched()
    };
    let _s = spawn(kennel_scheduler::run(cfg, c.client.clone()));
    class(&c, "local", "test.kennel.dev/disk", "WaitForFirstConsumer").await;
    claim(&c, "data", "local", "ReadWriteOnce").await;
    c.create_pod("web", json!({}), with_claim("data")).await;
    let node = wait_for(
        "selected-node",
        20,
        || async { claims(&c).get("data").await },
        selected_node,
    )
    .await;
    // Nobody provisions: PreBind gives up and says why.
    let (reason, msg) = c.wait_pod("web", 20, not_scheduled).await;
    assert_eq!(reason, "SchedulerError");
    assert_eq!(
        msg,
        "running PreBind plugin \"VolumeBinding\": binding volumes: timed out waiting for the condition"
    );
    let failed = wait_for(
        "FailedScheduling event",
        20,
        || async { Ok::<_, kube::Error>(c.events("web", "FailedScheduling").await) },
        |e: &Vec<k8s_openapi::api::core::v1::Event>| (!e.is_empty()).then(|| e.clone()),
    )
    .await;
    assert_eq!(failed[0].message.as_deref(), Some(msg.as_str()));
    // The pod was retried (the claim stays pinned to its node) and binds once provisioned.
    let pvc = claims(&c).get("data").await.unwrap();
    pv(
        &c,
        "pvc-data",
        "local",
        "ReadWriteOnce",
        Some(&node),
        Some(&pvc),
    )
    .await;
    bind_claim(&c, "data", "pvc-data").await;
    assert_eq!(c.wait_pod("web", 30, node_of).await, node);
}
