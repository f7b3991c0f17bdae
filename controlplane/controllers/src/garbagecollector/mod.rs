//! The garbage collector (upstream's `pkg/controller/garbagecollector`): every resource that can
//! be listed, watched and deleted is discovered (again every 30 s and whenever a CRD changes) and
//! watched as metadata; the owner/dependent [`graph`] is built by uid; workers then delete
//! dependents whose owners are all gone (Background), delete blocking dependents first and then
//! drop the owner's `foregroundDeletion` finalizer (Foreground), and strip the owner reference
//! from dependents before dropping `orphan` (Orphan). An owner counts as absent only when a live
//! GET by name answers 404 or another uid ([`attempt`]).

pub mod attempt;
pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher;
use tokio::sync::{mpsc, Notify};

use crate::Ctx;
use graph::{Graph, Identity, Work};

/// How often discovery runs again.
const REDISCOVER: Duration = Duration::from_secs(30);
/// Concurrent workers.
const WORKERS: usize = 4;

/// A resource as discovery found it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The resource.
    pub ar: ApiResource,
    /// Namespaced (not cluster-scoped).
    pub namespaced: bool,
}

/// Errors of one garbage-collector action.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The API answered with an error.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The object kept changing underneath.
    #[error("{0}")]
    Conflict(String),
    /// An owner reference names a kind no served resource has.
    #[error("unable to find a served resource for {0}")]
    UnknownKind(String),
}

/// A deduplicating work queue.
pub struct Queue {
    pending: Mutex<HashSet<Work>>,
    tx: mpsc::UnboundedSender<Work>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>,
}

impl Queue {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            pending: Mutex::new(HashSet::new()),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// Adds `w` unless it is already waiting.
    pub fn add(&self, w: Work) {
        if self.pending.lock().expect("queue").insert(w.clone()) {
            let _ = self.tx.send(w);
        }
    }

    async fn next(&self) -> Option<Work> {
        let w = self.rx.lock().await.recv().await?;
        self.pending.lock().expect("queue").remove(&w);
        Some(w)
    }
}

/// A change for the graph builder.
#[derive(Debug)]
pub enum GraphEvent {
    /// Added or modified.
    Upsert(
        Identity,
        Box<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    ),
    /// Deleted (observed, or a virtual owner found absent).
    Delete(String),
    /// A resource's watch stopped.
    Unwatched(String, String),
}

/// The collector's shared state.
pub struct Gc {
    /// The controller manager's context (client, recorder, limiter).
    pub ctx: Arc<Ctx>,
    /// The graph (written by the builder only).
    pub graph: Mutex<Graph>,
    /// Served resources by `(apiVersion, kind)`.
    pub served: RwLock<HashMap<(String, String), Served>>,
    /// The work queue.
    pub queue: Queue,
    /// Changes for the graph builder.
    pub events: mpsc::UnboundedSender<GraphEvent>,
}

impl Gc {
    /// The served resource of `api_version`/`kind`.
    pub fn resource(&self, api_version: &str, kind: &str) -> Result<Served, GcError> {
        self.served
            .read()
            .expect("served")
            .get(&(api_version.to_string(), kind.to_string()))
            .cloned()
            .ok_or_else(|| GcError::UnknownKind(format!("{api_version}, Kind={kind}")))
    }
}

/// What discovery found: every served `(apiVersion, kind)`, and the preferred resources to watch.
async fn discover(
    client: &kube::Client,
) -> Result<(HashMap<(String, String), Served>, Vec<Served>), kube::Error> {
    let d = Discovery::new(client.clone()).run().await?;
    let mut all = HashMap::new();
    let mut watch = Vec::new();
    for g in d.groups() {
        for v in g.versions() {
            for (ar, caps) in g.versioned_resources(v) {
                let s = Served {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar: ar.clone(),
                };
                all.insert((ar.api_version.clone(), ar.kind.clone()), s);
            }
        }
        for (ar, caps) in g.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            // Events are never owners nor collected (upstream's ignored resources).
            if !usable || ar.plural == "events" {
                continue;
            }
            watch.push(Served {
                namespaced: caps.scope == Scope::Namespaced,
                ar,
            });
        }
    }
    Ok((all, watch))
}

/// Watches one resource as metadata and feeds the graph builder.
async fn monitor(gc: Arc<Gc>, s: Served) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(gc.ctx.client.clone(), &s.ar);
    let stream = watcher(api, watcher::Config::default());
    futures::pin_mut!(stream);
    let identity = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| Identity {
        api_version: s.ar.api_version.clone(),
        kind: s.ar.kind.clone(),
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
    };
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(resource = %s.ar.plural, "gc watch: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let out = match ev {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                GraphEvent::Upsert(identity(&o.metadata), Box::new(o.metadata))
            }
            watcher::Event::Delete(o) => GraphEvent::Delete(o.metadata.uid.unwrap_or_default()),
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        if gc.events.send(out).is_err() {
            return;
        }
    }
}

/// Applies graph changes in order and queues the work they ask for.
async fn build(gc: Arc<Gc>, mut rx: mpsc::UnboundedReceiver<GraphEvent>) {
    while let Some(ev) = rx.recv().await {
        let work = {
            let mut g = gc.graph.lock().expect("graph");
            match ev {
                GraphEvent::Upsert(id, meta) if !id.uid.is_empty() => g.upsert(id, &meta),
                GraphEvent::Upsert(..) => vec![],
                GraphEvent::Delete(uid) => g.remove(&uid),
                GraphEvent::Unwatched(v, k) => g.remove_kind(&v, &k),
            }
        };
        for w in work {
            gc.queue.add(w);
        }
    }
}

/// Runs one worker: takes work, retries failures after the key's backoff.
async fn work(gc: Arc<Gc>) {
    while let Some(w) = gc.queue.next().await {
        let key = format!("gc/{w:?}");
        match attempt::run(&gc, &w).await {
            Ok(attempt::Outcome::Done) => gc.ctx.limiter.forget(&key),
            Ok(attempt::Outcome::Requeue) | Err(_) => {
                let delay = gc.ctx.limiter.when(&key).min(Duration::from_secs(30));
                let gc = gc.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    gc.queue.add(w);
                });
            }
        }
    }
}

/// Runs the garbage collector until dropped.
pub async fn run(ctx: Arc<Ctx>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gc = Arc::new(Gc {
        ctx: ctx.clone(),
        graph: Mutex::new(Graph::default()),
        served: RwLock::new(HashMap::new()),
        queue: Queue::new(),
        events: tx,
    });
    tokio::spawn(build(gc.clone(), rx));
    for _ in 0..WORKERS {
        tokio::spawn(work(gc.clone()));
    }
    // A CRD change (a new resource served, or one gone) runs discovery again.
    let crd_changed = Arc::new(Notify::new());
    {
        let notify = crd_changed.clone();
        let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
        tokio::spawn(async move {
            let stream = watcher(crds, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(
                        watcher::Event::Apply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitDone,
                    ) => notify.notify_one(),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        });
    }
    tracing::info!("garbage collector started");
    let mut monitors: HashMap<(String, String), tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match discover(&ctx.client).await {
            Ok((all, watch)) => {
                *gc.served.write().expect("served") = all;
                let wanted: HashSet<(String, String)> = watch
                    .iter()
                    .map(|s| (s.ar.api_version.clone(), s.ar.kind.clone()))
                    .collect();
                monitors.retain(|k, h| {
                    let keep = wanted.contains(k);
                    if !keep {
                        h.abort();
                        let _ = gc
                            .events
                            .send(GraphEvent::Unwatched(k.0.clone(), k.1.clone()));
                    }
                    keep
                });
                for s in watch {
                    let k = (s.ar.api_version.clone(), s.ar.kind.clone());
                    monitors
                        .entry(k)
                        .or_insert_with(|| tokio::spawn(monitor(gc.clone(), s)));
                }
            }
            Err(e) => tracing::warn!("garbage collector discovery: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REDISCOVER) => {}
            _ = crd_changed.notified() => {
                // Let the CRD's resource start being served before looking.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}
