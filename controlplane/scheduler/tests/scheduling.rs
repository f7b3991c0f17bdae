//! The scheduler against the real API server with simulated nodes: binding and Running, exact
//! unschedulable reporting and retry on cluster events, cordons, pod anti-affinity spreading,
//! and two scheduler instances never double-binding.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use kennel_scheduler::sim::{self, SimConfig};
use kennel_scheduler::SchedulerConfig;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

fn sim_cfg(prefix: &str, nodes: usize, cpu: &str) -> SimConfig {
    SimConfig {
        nodes,
        name_prefix: prefix.into(),
        cpu: cpu.into(),
        memory: "4Gi".into(),
        pod_ready_delay: Duration::from_millis(200),
        ..Default::default()
    }
}

fn sched(identity: &str, leader_elect: bool) -> SchedulerConfig {
    SchedulerConfig {
        identity: identity.into(),
        leader_elect,
        ..Default::default()
    }
}

async fn wait_nodes(c: &Cluster, n: usize) {
    let api: Api<Node> = Api::all(c.client.clone());
    for _ in 0..200 {
        if api
            .list(&Default::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
            >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nodes not registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_bound_and_run_on_sim_nodes() {
    let c = Cluster::start().await;
    let _sim = spawn(sim::run(sim_cfg("sim-", 3, "4"), c.client.clone()));
    wait_nodes(&c, 3).await;
    let _s = spawn(kennel_scheduler::run(sched("s1", false), c.client.clone()));
    for i in 0..12 {
        c.create_pod(&format!("p{i}"), json!({}), json!({})).await;
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..12 {
        let name = format!("p{i}");
        let node = c.wait_pod(&name, 20, node_of).await;
        c.wait_pod(&name, 20, running).await;
        *per_node.entry(node).or_default() += 1;
        let ev = c.events(&name, "Scheduled").await;
        assert_eq!(ev.len(), 1);
        assert!(ev[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with(&format!("Successfully assigned default/{name} to sim-")));
        assert_eq!(
            ev[0].source.as_ref().unwrap().component.as_deref(),
            Some("default-scheduler")
        );
    }
    // LeastAllocated + BalancedAllocation spread identical pods over all nodes.
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    // Pod IPs are unique.
    let ips: HashSet<String> = c
        .pods()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ips.len(), 12);
    // Deleting a pod: the sim finishes termination (grace 0).
    c.pods()
        .delete("p0", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if c.pods().get_opt("p0").await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("p0 was not deleted by the simulated kubelet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_reports_and_retries_on_events() {
    let c = Cluster::start().await;
    // Two 1-cpu nodes and one tainted node.
    let _sim = spawn(sim::run(sim_cfg("small-", 2, "1"), c.client.clone()));
    let mut tainted = sim_cfg("cp-", 1, "1");
    tainted.taints = vec![serde_json::from_value(
        json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
    )
    .unwrap()];
    let _sim2 = spawn(sim::run(tainted, c.client.clone()));
    wait_nodes(&c, 3).await;
    let _s = spawn(kennel_scheduler::run(sched("s1", false), c.client.clone()));
    let cpu = |q: &str| json!({"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": q}}}]});
    c.create_pod("big-a", json!({}), cpu("700m")).await;
    c.create_pod("big-b", json!({}), cpu("700m")).await;
    c.wait_pod("big-a", 20, node_of).await;
    c.wait_pod("big-b", 20, node_of).await;
    c.create_pod("waiting", json!({}), cpu("700m")).await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    let msg = c.wait_pod("waiting", 20, unschedulable_message).await;
    assert_eq!(msg, want);
    let mut failed = Vec::new();
    for _ in 0..50 {
        failed = c.events("waiting", "FailedScheduling").await;
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed[0].message.as_deref(), Some(want));
    assert_eq!(failed[0].type_.as_deref(), Some("Warning"));
    assert!(node_of(&c.pods().get("waiting").await.unwrap()).is_none());
    // Freeing a node schedules it.
    c.pods()
        .delete("big-a", &DeleteParams::default())
        .await
        .unwrap();
    let node = c.wait_pod("waiting", 20, node_of).await;
    assert!(node.starts_with("small-"));
    c.wait_pod("waiting", 20, running).await;
    // A pod that fits nowhere schedules as soon as a node is added.
    c.create_pod("waiting2", json!({}), cpu("700m")).await;
    c.wait_pod("waiting2", 20, unschedulable_message).await;
    let _sim3 = spawn(sim::run(sim_cfg("new-", 1, "1"), c.client.clone()));
    assert_eq!(c.wait_pod("waiting2", 20, node_of).await, "new-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordoned_node_gets_no_new_pods() {
    let c = Cluster::start().await;
    let _sim = spawn(sim::run(sim_cfg("n-", 2, "8"), c.client.clone()));
    wait_nodes(&c, 2).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes
        .patch(
            "n-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let _s = spawn(kennel_scheduler::run(sched("s1", false), c.client.clone()));
    for i in 0..8 {
        c.create_pod(&format!("p{i}"), json!({}), json!({})).await;
    }
    for i in 0..8 {
        assert_eq!(c.wait_pod(&format!("p{i}"), 20, node_of).await, "n-1");
    }
    // A pod tolerating the cordon may go there.
    c.create_pod("tolerant", json!({}), json!({
        "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": "n-0"}})).await;
    assert_eq!(c.wait_pod("tolerant", 20, node_of).await, "n-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_anti_affinity_spreads_one_per_node() {
    let c = Cluster::start().await;
    let _sim = spawn(sim::run(sim_cfg("z-", 4, "8"), c.client.clone()));
    wait_nodes(&c, 4).await;
    let _s = spawn(kennel_scheduler::run(sched("s1", false), c.client.clone()));
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    // All at once: assumed pods must already count for the next decision.
    for i in 0..5 {
        c.create_pod(&format!("web-{i}"), json!({"app": "web"}), anti.clone())
            .await;
    }
    let mut nodes = BTreeMap::new();
    let mut pending = Vec::new();
    for _ in 0..100 {
        nodes.clear();
        pending.clear();
        for p in c.pods().list(&Default::default()).await.unwrap().items {
            match node_of(&p) {
                Some(n) => *nodes.entry(n).or_insert(0) += 1,
                None => pending.push(p),
            }
        }
        if nodes.len() == 4 && pending.len() == 1 && unschedulable_message(&pending[0]).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    assert!(nodes.values().all(|&n| n == 1), "{nodes:?}");
    assert_eq!(
        unschedulable_message(&pending[0]).unwrap(),
        "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules. preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_double_bind() {
    let c = Cluster::start().await;
    let _sim = spawn(sim::run(sim_cfg("d-", 3, "32"), c.client.clone()));
    wait_nodes(&c, 3).await;
    // Two leader-elected instances and, to prove 409 handling, two unelected ones on their
    // own clients all race for the same pods.
    let c1 = Cluster::client_for(&c.api).await;
    let c2 = Cluster::client_for(&c.api).await;
    let c3 = Cluster::client_for(&c.api).await;
    let _a = spawn(kennel_scheduler::run(sched("leader-a", true), c1));
    let _b = spawn(kennel_scheduler::run(sched("leader-b", true), c2));
    let _u1 = spawn(kennel_scheduler::run(sched("free-1", false), c3.clone()));
    let _u2 = spawn(kennel_scheduler::run(sched("free-2", false), c3));
    let n = 40;
    for i in 0..n {
        c.create_pod(&format!("p{i}"), json!({}), json!({})).await;
    }
    for i in 0..n {
        c.wait_pod(&format!("p{i}"), 25, node_of).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..n {
        let ev = c.events(&format!("p{i}"), "Scheduled").await;
        assert_eq!(ev.len(), 1, "p{i} bound more than once: {ev:?}");
    }
    // Exactly one elected holder.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.client.clone(), "kube-system");
    let l = leases.get("kube-scheduler").await.unwrap();
    let holder = l.spec.unwrap().holder_identity.unwrap();
    assert!(holder == "leader-a" || holder == "leader-b", "{holder}");
}
