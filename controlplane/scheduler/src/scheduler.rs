//! The scheduling loop: watches feed the cache and the queue, one task makes decisions one pod
//! at a time (so each decision sees every earlier, assumed one), and bindings run concurrently
//! (bounded) while decisions continue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cache::{Cache, NodeChange};
use crate::framework::{BindFailure, Profile, Rotor};
use crate::nodeinfo::PodInfo;
use crate::plugins;
use crate::plugins::volume_binding::BIND_TIMEOUT;
use crate::queue::SchedulingQueue;
use crate::report::Reporter;
use crate::volume_events::{StorageEvent, StorageWatches};
use crate::volumes::VolumeStore;
use kennel_lease::{Elector, LeaderError, LeaseConfig};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `spec.schedulerName` this scheduler serves (`default-scheduler`).
    pub scheduler_name: String,
    /// This instance's identity (Lease holder, events' reportingInstance).
    pub identity: String,
    /// Only schedule while holding the `kube-system/kube-scheduler` Lease.
    pub leader_elect: bool,
    /// Bindings in flight at once.
    pub max_in_flight_bindings: usize,
    /// percentageOfNodesToScore; 0 = upstream's adaptive default.
    pub percentage_of_nodes_to_score: u32,
    /// How long VolumeBinding's PreBind waits for a pod's claims to become Bound before the
    /// pod is retried (upstream `bindTimeoutSeconds`, 600 s).
    pub bind_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            scheduler_name: "default-scheduler".into(),
            identity: format!("kennel-scheduler-{}", std::process::id()),
            leader_elect: true,
            max_in_flight_bindings: 32,
            percentage_of_nodes_to_score: 0,
            bind_timeout: BIND_TIMEOUT,
        }
    }
}

/// Errors that end the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Leadership was lost (restart to campaign again, as kube-scheduler exits).
    #[error("leader election")]
    Leader(#[from] LeaderError),
}

/// Runs the scheduler until the future is dropped (or leadership is lost).
pub async fn run(cfg: SchedulerConfig, client: kube::Client) -> Result<(), SchedulerError> {
    if !cfg.leader_elect {
        schedule_forever(cfg, client).await;
        return Ok(());
    }
    let mut elector = Elector::new(
        client.clone(),
        LeaseConfig::new("kube-scheduler", &cfg.identity),
    );
    elector.acquire().await;
    tokio::select! {
        _ = schedule_forever(cfg, client) => Ok(()),
        e = elector.hold() => Err(e.into()),
    }
}

enum Input {
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
    Ns(Box<watcher::Event<Namespace>>),
    Storage(StorageEvent),
    Bound {
        info: Arc<PodInfo>,
        result: Result<(), BindFailure>,
    },
}

/// Aborts the watch tasks when the scheduler future is dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    wrap: fn(watcher::Event<K>) -> Input,
    tx: mpsc::Sender<Input>,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("scheduler watch: {e}"),
            }
        }
    })
}

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
}

#[derive(Default)]
struct Relist {
    pods: Option<HashSet<String>>,
    nodes: Option<HashSet<String>>,
    ns: Option<HashSet<String>>,
    synced: [bool; 3],
}

struct Loop {
    cache: Cache,
    queue: SchedulingQueue,
    rotor: Rotor,
    profile: Arc<Profile>,
    reporter: Reporter,
    client: kube::Client,
    relist: Relist,
    volumes: Arc<VolumeStore>,
    storage: StorageWatches,
    in_flight: usize,
    tx: mpsc::Sender<Input>,
}

/// Whether this profile schedules `pod` (unbound, ours, not terminating, no scheduling gates).
pub fn responsible(pod: &Pod, scheduler_name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let name = spec
        .scheduler_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default-scheduler");
    name == scheduler_name
        && spec.node_name.as_deref().unwrap_or("").is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl Loop {
    fn synced(&self) -> bool {
        self.relist.synced.iter().all(|s| *s) && self.storage.synced()
    }

    fn pod_applied(&mut self, pod: Pod) {
        let now = Instant::now();
        let key = key_of(&pod);
        if terminal(&pod) {
            self.queue.delete(&key);
            if self.cache.remove_pod(&key) {
                self.queue.move_all_to_active(now);
            }
            return;
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let ours = responsible(&pod, &self.profile.scheduler_name);
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        match node {
            Some(n) => {
                self.queue.delete(&key);
                self.cache.apply_bound_pod(info, &n);
            }
            None if self.cache.is_assumed(&key) => {}
            None if ours => self.queue.add_or_update(info, now),
            None => self.queue.delete(&key),
        }
    }

    fn pod_deleted(&mut self, pod: &Pod) {
        let key = key_of(pod);
        self.queue.delete(&key);
        if self.cache.remove_pod(&key) {
            self.queue.move_all_to_active(Instant::now());
        }
        if let Some(uid) = &pod.metadata.uid {
            self.reporter.forget(uid);
        }
    }

    fn node_applied(&mut self, node: Node) {
        match self.cache.apply_node(node) {
            NodeChange::Added | NodeChange::Relevant => {
                self.queue.move_all_to_active(Instant::now())
            }
            NodeChange::Irrelevant => {}
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Pod(ev) => match *ev {
                watcher::Event::Apply(p) => self.pod_applied(p),
                watcher::Event::Delete(p) => self.pod_deleted(&p),
                watcher::Event::Init => self.relist.pods = Some(HashSet::new()),
                watcher::Event::InitApply(p) => {
                    if let Some(s) = &mut self.relist.pods {
                        s.insert(key_of(&p));
                    }
                    self.pod_applied(p);
                }
                watcher::Event::InitDone => {
                    let seen = self.relist.pods.take().unwrap_or_default();
                    let mut gone: Vec<String> = self.cache.pod_keys();
                    gone.extend(self.queue.keys());
                    for k in gone.into_iter().filter(|k| !seen.contains(k)) {
                        self.queue.delete(&k);
                        if !self.cache.is_assumed(&k) {
                            self.cache.remove_pod(&k);
                        }
                    }
                    self.queue.move_all_to_active(Instant::now());
                    self.relist.synced[0] = true;
                }
            },
            Input::Node(ev) => match *ev {
                watcher::Event::Apply(n) => self.node_applied(n),
                watcher::Event::Delete(n) => self
                    .cache
                    .remove_node(n.metadata.name.as_deref().unwrap_or_default()),
                watcher::Event::Init => self.relist.nodes = Some(HashSet::new()),
                watcher::Event::InitApply(n) => {
                    if let Some(s) = &mut self.relist.nodes {
                        s.insert(n.metadata.name.clone().unwrap_or_default());
                    }
                    self.node_applied(n);
                }
                watcher::Event::InitDone => {
                    let seen = self.relist.nodes.take().unwrap_or_default();
                    for n in self.cache.node_names() {
                        if !seen.contains(&n) {
                            self.cache.remove_node(&n);
                        }
                    }
                    self.relist.synced[1] = true;
                }
            },
            Input::Ns(ev) => match *ev {
                watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    if let Some(s) = &mut self.relist.ns {
                        s.insert(name.clone());
                    }
                    self.cache
                        .namespaces
                        .insert(name, n.metadata.labels.unwrap_or_default());
                }
                watcher::Event::Delete(n) => {
                    self.cache
                        .namespaces
                        .remove(n.metadata.name.as_deref().unwrap_or_default());
                }
                watcher::Event::Init => self.relist.ns = Some(HashSet::new()),
                watcher::Event::InitDone => {
                    let seen = self.relist.ns.take().unwrap_or_default();
                    self.cache.namespaces.retain(|k, _| seen.contains(k));
                    self.relist.synced[2] = true;
                }
            },
            Input::Storage(ev) => {
                if self.storage.apply(&self.volumes, ev) {
                    self.queue.move_all_to_active(Instant::now());
                }
            }
            Input::Bound { info, result } => {
                self.in_flight -= 1;
                let now = Instant::now();
                match result {
                    Ok(()) => {}
                    Err(f) => {
                        self.cache.forget(&info.key);
                        self.queue.move_all_to_active(now);
                        match f {
                            BindFailure::AlreadyBound(m) => {
                                tracing::debug!(pod = %info.key, "already bound: {m}")
                            }
                            BindFailure::Gone(m) => tracing::debug!(pod = %info.key, "gone: {m}"),
                            BindFailure::Other(m) => {
                                tracing::info!(pod = %info.key, "binding failed: {m}");
                                self.queue.error(info, now);
                            }
                        }
                    }
                }
            }
        }
    }

    fn schedule_one(&mut self, info: Arc<PodInfo>) {
        let key = info.key.clone();
        if self.cache.has_pod(&key) {
            self.queue.done(&key);
            return;
        }
        let now = Instant::now();
        match self
            .profile
            .schedule(&info, self.cache.snapshot(), &mut self.rotor)
        {
            Ok(d) => {
                self.cache.assume(info.clone(), &d.node);
                if let Err(msg) = self.profile.run_reserve(&d.state, &info, &d.node) {
                    // As upstream: the assumption is dropped and the pod backs off, reported
                    // as a scheduler error.
                    self.cache.forget(&key);
                    tracing::info!(pod = %key, "reserve failed: {msg}");
                    self.queue.error(info.clone(), now);
                    let reporter = self.reporter.clone();
                    tokio::spawn(async move {
                        reporter.scheduler_error(&info.pod, &msg).await;
                        reporter.failed(&info.pod, &msg).await;
                    });
                    return;
                }
                self.queue.done(&key);
                self.in_flight += 1;
                let profile = self.profile.clone();
                let reporter = self.reporter.clone();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let result =
                        bind(&profile, d.state.clone(), info.pod.clone(), d.node.clone()).await;
                    let pod = info.pod.clone();
                    if result.is_err() {
                        // Drop the volume assumptions before the loop may retry the pod.
                        profile.run_unreserve(&d.state, &info, &d.node);
                    }
                    let report = result.clone();
                    let _ = tx.send(Input::Bound { info, result }).await;
                    match report {
                        Ok(()) => reporter.scheduled(&pod, &d.node).await,
                        Err(BindFailure::Other(m)) => {
                            reporter.scheduler_error(&pod, &m).await;
                            reporter.failed(&pod, &m).await;
                        }
                        Err(_) => {}
                    }
                });
            }
            Err(fit) => {
                let msg = fit.message();
                tracing::debug!(pod = %key, "unschedulable: {msg}");
                self.queue.unschedulable(&key, now);
                let reporter = self.reporter.clone();
                let client = self.client.clone();
                let nominated = fit.post_filter.nominated_node.clone();
                let victims = fit.post_filter.victims.clone();
                let pod = info.pod.clone();
                tokio::spawn(async move {
                    if let Some(node) = &nominated {
                        preempt(&client, &reporter, &pod, node, &victims).await;
                    }
                    reporter
                        .unschedulable(&pod, &msg, nominated.as_deref())
                        .await;
                    reporter.failed(&pod, &msg).await;
                });
            }
        }
    }
}

async fn bind(
    profile: &Profile,
    state: Arc<crate::framework::CycleState>,
    pod: Arc<Pod>,
    node: String,
) -> Result<(), BindFailure> {
    for p in &profile.pre_bind {
        p.pre_bind(state.clone(), pod.clone(), node.clone()).await?;
    }
    match profile.bind.first() {
        Some(b) => b.bind(pod, node).await,
        None => Err(BindFailure::Other("no bind plugin".into())),
    }
}

/// Deletes the victims (with their grace period) and records `Preempted` events on them.
async fn preempt(
    client: &kube::Client,
    reporter: &Reporter,
    preemptor: &Pod,
    node: &str,
    victims: &[Arc<PodInfo>],
) {
    for v in victims {
        let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
        let name = v.pod.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                let msg = format!(
                    "Preempted by pod {} on node {node}",
                    preemptor.metadata.uid.as_deref().unwrap_or_default()
                );
                reporter
                    .event(&v.pod, "Normal", "Preempted", "Preempting", &msg)
                    .await;
            }
            Err(e) => tracing::warn!(victim = %v.key, "preemption delete: {e}"),
        }
    }
}

/// Watches pods, nodes, namespaces, PVs, PVCs and StorageClasses, and schedules until dropped.
async fn schedule_forever(cfg: SchedulerConfig, client: kube::Client) {
    let volumes = VolumeStore::new();
    let mut profile = plugins::default_profile(
        &cfg.scheduler_name,
        Some(client.clone()),
        volumes.clone(),
        cfg.bind_timeout,
    );
    profile.percentage_of_nodes_to_score = cfg.percentage_of_nodes_to_score;
    let (tx, mut rx) = mpsc::channel(8192);
    let _tasks = Tasks(vec![
        spawn_watch(
            Api::<Pod>::all(client.clone()),
            |e| Input::Pod(Box::new(e)),
            tx.clone(),
        ),
        spawn_watch(
            Api::<Node>::all(client.clone()),
            |e| Input::Node(Box::new(e)),
            tx.clone(),
        ),
        spawn_watch(
            Api::<Namespace>::all(client.clone()),
            |e| Input::Ns(Box::new(e)),
            tx.clone(),
        ),
        spawn_watch(
            Api::<PersistentVolume>::all(client.clone()),
            |e| Input::Storage(StorageEvent::Pv(Box::new(e))),
            tx.clone(),
        ),
        spawn_watch(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            |e| Input::Storage(StorageEvent::Pvc(Box::new(e))),
            tx.clone(),
        ),
        spawn_watch(
            Api::<StorageClass>::all(client.clone()),
            |e| Input::Storage(StorageEvent::Class(Box::new(e))),
            tx.clone(),
        ),
    ]);
    let mut lp = Loop {
        cache: Cache::new(),
        queue: SchedulingQueue::new(),
        rotor: Rotor::default(),
        profile: Arc::new(profile),
        reporter: Reporter::new(client.clone(), &cfg.identity),
        client,
        relist: Relist::default(),
        volumes,
        storage: StorageWatches::default(),
        in_flight: 0,
        tx,
    };
    let max = cfg.max_in_flight_bindings.max(1);
    let mut last_flush = Instant::now();
    loop {
        while let Ok(input) = rx.try_recv() {
            lp.handle(input);
        }
        let now = Instant::now();
        if now.duration_since(last_flush) >= Duration::from_secs(1) {
            lp.queue.flush(now);
            last_flush = now;
        }
        if lp.synced() && lp.in_flight < max {
            if let Some(info) = lp.queue.pop(now) {
                lp.schedule_one(info);
                continue;
            }
        }
        let wake = lp
            .queue
            .next_backoff_expiry()
            .map_or(now + Duration::from_secs(1), |t| {
                t.min(now + Duration::from_secs(1))
            });
        tokio::select! {
            input = rx.recv() => {
                if let Some(input) = input {
                    lp.handle(input);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn responsibility() {
        let p = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let cases = [
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": []}}),
                true,
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [], "schedulerName": "default-scheduler"}}),
                true,
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [], "schedulerName": "other"}}),
                false,
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [], "nodeName": "n"}}),
                false,
            ),
            (
                json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": []}}),
                false,
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [], "schedulingGates": [{"name": "g"}]}}),
                false,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(responsible(&p(v.clone()), "default-scheduler"), want, "{v}");
        }
    }
}
