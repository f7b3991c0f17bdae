//! Simulated nodes for scale tests, in the spirit of KWOK: Node objects with Leases, Ready, whose
//! bound pods turn Running/Ready (with a pod IP from a fake per-node CIDR) after a delay, and
//! whose terminating pods are deleted with grace 0 as a kubelet does when it finishes. No VMs.
//!
//! One watch on pods with `spec.nodeName!=` serves all nodes; writes go through the status
//! subresource with bounded concurrency.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Simulated node settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Names are `<prefix><index>`.
    pub name_prefix: String,
    /// CPU capacity (quantity).
    pub cpu: String,
    /// Memory capacity (quantity).
    pub memory: String,
    /// Pods capacity.
    pub pods: u32,
    /// Extra node labels (`kubernetes.io/hostname` and `type=kwok` are always set).
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// Delay from binding to Running.
    pub pod_ready_delay: Duration,
    /// Lease renewal interval (kubelet: 10 s).
    pub lease_interval: Duration,
    /// API writes in flight at once.
    pub concurrency: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            name_prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            pod_ready_delay: Duration::from_secs(1),
            lease_interval: Duration::from_secs(10),
            concurrency: 32,
        }
    }
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Registering a node failed.
    #[error("registering node {0}")]
    Register(String, #[source] kube::Error),
}

/// The node's InternalIP.
pub fn host_ip(i: usize) -> String {
    let i = i + 1;
    format!("172.{}.{}.{}", 16 + (i >> 16) % 16, (i >> 8) % 256, i % 256)
}

/// The node's pod CIDR (`/24`) prefix, e.g. `10.128.3`.
pub fn pod_cidr_prefix(i: usize) -> String {
    format!("10.{}.{}", 128 + (i >> 8) % 128, i % 256)
}

/// The Node object of sim node `i`.
pub fn node_object(cfg: &SimConfig, i: usize) -> Node {
    let name = format!("{}{i}", cfg.name_prefix);
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("type".into(), "kwok".into());
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"podCIDR": format!("{}.0/24", pod_cidr_prefix(i)), "taints": cfg.taints},
    }))
    .expect("node object")
}

fn node_status(cfg: &SimConfig, i: usize) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let res = json!({"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string(), "ephemeral-storage": "100Gi"});
    let cond = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ],
        "addresses": [{"type": "InternalIP", "address": host_ip(i)}, {"type": "Hostname", "address": format!("{}{i}", cfg.name_prefix)}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "sim", "osImage": "kennel sim",
            "containerRuntimeVersion": "sim://0", "kubeletVersion": "v1.33.0-kennel-sim", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64"},
        "phase": "Running",
    }})
}

async fn register(client: &kube::Client, cfg: &SimConfig, i: usize) -> Result<(), SimError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = node_object(cfg, i);
    let name = node.metadata.name.clone().unwrap_or_default();
    let err = |e| SimError::Register(name.clone(), e);
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": node.metadata.labels}, "spec": node.spec});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&node_status(cfg, i)),
    )
    .await
    .map_err(err)?;
    renew_lease(client, &name).await.map_err(err)?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(Timestamp::now());
    let patch =
        json!({"spec": {"renewTime": now, "holderIdentity": node, "leaseDurationSeconds": 40}});
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.into()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The Running status the simulator writes for `pod`.
pub fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let spec = pod.spec.clone().unwrap_or_default();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "lastProbeTime": null});
    let running = |c: &k8s_openapi::api::core::v1::Container| {
        json!({"name": c.name, "image": c.image, "imageID": c.image.clone().unwrap_or_default(),
            "containerID": format!("kwok://{}", c.name), "ready": true, "started": true, "restartCount": 0,
            "state": {"running": {"startedAt": now}}})
    };
    let init: Vec<serde_json::Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            if c.restart_policy.as_deref() == Some("Always") {
                running(c)
            } else {
                json!({"name": c.name, "image": c.image, "imageID": c.image.clone().unwrap_or_default(),
                    "containerID": format!("kwok://{}", c.name), "ready": true, "started": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}})
            }
        })
        .collect();
    let mut status = json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "containerStatuses": spec.containers.iter().map(running).collect::<Vec<_>>(),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    json!({"status": status})
}

/// Pod IPs per node: lowest free host number in the node's /24.
#[derive(Debug, Default)]
pub struct Ipam {
    used: HashMap<String, BTreeSet<u8>>,
    by_uid: HashMap<String, (String, u8)>,
}

impl Ipam {
    /// Allocates (or returns the existing) host number for `uid` on `node`.
    pub fn allocate(&mut self, node: &str, uid: &str) -> Option<u8> {
        if let Some((n, ip)) = self.by_uid.get(uid) {
            if n == node {
                return Some(*ip);
            }
        }
        let used = self.used.entry(node.to_string()).or_default();
        let ip = (2..=254u8).find(|i| !used.contains(i))?;
        used.insert(ip);
        self.by_uid.insert(uid.to_string(), (node.to_string(), ip));
        Some(ip)
    }

    /// Records an address seen on a pod (after a restart of the simulator).
    pub fn adopt(&mut self, node: &str, uid: &str, ip: u8) {
        self.used.entry(node.to_string()).or_default().insert(ip);
        self.by_uid.insert(uid.to_string(), (node.to_string(), ip));
    }

    /// Frees the address of `uid`.
    pub fn release(&mut self, uid: &str) {
        if let Some((n, ip)) = self.by_uid.remove(uid) {
            if let Some(u) = self.used.get_mut(&n) {
                u.remove(&ip);
            }
        }
    }
}

struct Due {
    ns: String,
    name: String,
    uid: String,
    node: String,
    pod: Arc<Pod>,
}

/// Runs `cfg.nodes` simulated nodes until the future is dropped.
pub async fn run(cfg: SimConfig, client: kube::Client) -> Result<(), SimError> {
    let results: Vec<Result<(), SimError>> = futures::stream::iter(0..cfg.nodes)
        .map(|i| {
            let (client, cfg) = (client.clone(), cfg.clone());
            async move { register(&client, &cfg, i).await }
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, SimError>>()?;
    tracing::info!(nodes = cfg.nodes, "simulated nodes registered");
    let index: HashMap<String, usize> = (0..cfg.nodes)
        .map(|i| (format!("{}{i}", cfg.name_prefix), i))
        .collect();
    let names: Vec<String> = index.keys().cloned().collect();
    let lease_client = client.clone();
    let (interval, conc) = (cfg.lease_interval, cfg.concurrency.max(1));
    let leases = tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            futures::stream::iter(names.iter())
                .for_each_concurrent(conc, |n| {
                    let c = lease_client.clone();
                    async move {
                        if let Err(e) = renew_lease(&c, n).await {
                            tracing::warn!(node = %n, "lease: {e}");
                        }
                    }
                })
                .await;
        }
    });
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _leases = AbortOnDrop(leases);
    pods(cfg, client, index).await;
    Ok(())
}

async fn pods(cfg: SimConfig, client: kube::Client, index: HashMap<String, usize>) {
    let api: Api<Pod> = Api::all(client.clone());
    let stream =
        watcher(api, watcher::Config::default().fields("spec.nodeName!=")).default_backoff();
    futures::pin_mut!(stream);
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut ipam = Ipam::default();
    let mut pending: HashSet<String> = HashSet::new();
    let mut deleting: HashSet<String> = HashSet::new();
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut due: HashMap<u64, Due> = HashMap::new();
    let mut seq = 0u64;
    loop {
        let next = heap.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return };
                let pod = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                    Ok(watcher::Event::Delete(p)) => {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        ipam.release(&uid);
                        pending.remove(&uid);
                        deleting.remove(&uid);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!("sim pod watch: {e}");
                        continue;
                    }
                };
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                if !index.contains_key(&node) {
                    continue;
                }
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let st = pod.status.as_ref();
                if let Some(ip) = st.and_then(|s| s.pod_ip.as_deref()) {
                    if let Some(last) = ip.rsplit('.').next().and_then(|l| l.parse().ok()) {
                        ipam.adopt(&node, &uid, last);
                    }
                }
                if pod.metadata.deletion_timestamp.is_some() {
                    if deleting.insert(uid.clone()) {
                        let (c, sem) = (client.clone(), sem.clone());
                        tokio::spawn(async move {
                            let _p = sem.acquire().await;
                            let api: Api<Pod> = Api::namespaced(c, &ns);
                            let dp = DeleteParams {
                                grace_period_seconds: Some(0),
                                preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                                ..Default::default()
                            };
                            if let Err(e) = api.delete(&name, &dp).await {
                                tracing::debug!(pod = %name, "sim delete: {e}");
                            }
                        });
                    }
                    continue;
                }
                let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                let done = matches!(phase, "Succeeded" | "Failed")
                    || (phase == "Running" && st.and_then(|s| s.pod_ip.as_deref()).is_some());
                if done || !pending.insert(uid.clone()) {
                    continue;
                }
                seq += 1;
                heap.push(Reverse((Instant::now() + cfg.pod_ready_delay, seq)));
                due.insert(seq, Due { ns, name, uid, node, pod: Arc::new(pod) });
            }
            _ = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                while let Some(Reverse((t, s))) = heap.peek().copied() {
                    if t > Instant::now() {
                        break;
                    }
                    heap.pop();
                    let Some(d) = due.remove(&s) else { continue };
                    if !pending.contains(&d.uid) {
                        continue;
                    }
                    let ni = index[&d.node];
                    let Some(host) = ipam.allocate(&d.node, &d.uid) else {
                        tracing::warn!(node = %d.node, "sim: pod CIDR exhausted");
                        continue;
                    };
                    let pod_ip = format!("{}.{host}", pod_cidr_prefix(ni));
                    let body = running_status(&d.pod, &host_ip(ni), &pod_ip);
                    let (c, sem) = (client.clone(), sem.clone());
                    tokio::spawn(async move {
                        let _p = sem.acquire().await;
                        let api: Api<Pod> = Api::namespaced(c, &d.ns);
                        if let Err(e) = api.patch_status(&d.name, &PatchParams::default(), &Patch::Merge(&body)).await {
                            tracing::debug!(pod = %d.name, "sim status: {e}");
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(host_ip(0), "172.16.0.1");
        assert_eq!(host_ip(255), "172.16.1.0");
        assert_eq!(pod_cidr_prefix(0), "10.128.0");
        assert_eq!(pod_cidr_prefix(300), "10.129.44");
        let mut ipam = Ipam::default();
        assert_eq!(ipam.allocate("a", "u1"), Some(2));
        assert_eq!(ipam.allocate("a", "u1"), Some(2));
        assert_eq!(ipam.allocate("a", "u2"), Some(3));
        assert_eq!(ipam.allocate("b", "u3"), Some(2));
        ipam.release("u1");
        assert_eq!(ipam.allocate("a", "u4"), Some(2));
        for i in 0..252 {
            ipam.allocate("c", &format!("x{i}"));
        }
        assert_eq!(ipam.allocate("c", "y"), Some(254));
        assert_eq!(ipam.allocate("c", "z"), None);
    }

    #[test]
    fn node_and_status_objects() {
        let cfg = SimConfig::default();
        let n = node_object(&cfg, 2);
        assert_eq!(n.metadata.name.as_deref(), Some("sim-2"));
        assert_eq!(
            n.metadata.labels.as_ref().unwrap()["kubernetes.io/hostname"],
            "sim-2"
        );
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
        let s = running_status(&pod, "172.16.0.3", "10.128.2.2");
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(s["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(s["status"]["conditions"].as_array().unwrap().len(), 5);
    }
}
