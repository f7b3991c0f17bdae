//! Shared informers: one watch per resource type for every controller, a reflector cache with
//! indexes (by namespace, by controller-owner uid), synchronous event handlers (run before any
//! controller is triggered, so expectations are observed first) and fan-out streams that feed
//! `kube::runtime::Controller`s.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;

/// One change seen by an informer.
#[derive(Debug)]
pub enum Change<K> {
    /// A new object.
    Added(Arc<K>),
    /// A new version of an object.
    Updated {
        /// The version before.
        old: Arc<K>,
        /// The version now.
        new: Arc<K>,
    },
    /// The object is gone (its last known version).
    Deleted(Arc<K>),
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Added(o) => Change::Added(o.clone()),
            Change::Updated { old, new } => Change::Updated {
                old: old.clone(),
                new: new.clone(),
            },
            Change::Deleted(o) => Change::Deleted(o.clone()),
        }
    }
}

impl<K> Change<K> {
    /// The object as it is now (or was last, for a deletion).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Deleted(o) => o,
            Change::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// Secondary indexes over the cache.
struct Index<K: Resource<DynamicType = ()>> {
    by_ns: HashMap<String, HashSet<ObjectRef<K>>>,
    by_owner: HashMap<String, HashSet<ObjectRef<K>>>,
}

impl<K: Resource<DynamicType = ()>> Default for Index<K> {
    fn default() -> Self {
        Self {
            by_ns: HashMap::new(),
            by_owner: HashMap::new(),
        }
    }
}

/// The uid of the controller owner of `obj`, if any.
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

impl<K: Resource<DynamicType = ()>> Index<K> {
    fn insert(&mut self, obj: &K) {
        let r = ObjectRef::from_obj(obj);
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        self.by_ns.entry(ns).or_default().insert(r.clone());
        if let Some(uid) = controller_uid(obj) {
            self.by_owner.entry(uid.to_string()).or_default().insert(r);
        }
    }

    fn remove(&mut self, obj: &K) {
        let r = ObjectRef::from_obj(obj);
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        if let Some(s) = self.by_ns.get_mut(&ns) {
            s.remove(&r);
            if s.is_empty() {
                self.by_ns.remove(&ns);
            }
        }
        if let Some(uid) = controller_uid(obj) {
            if let Some(s) = self.by_owner.get_mut(uid) {
                s.remove(&r);
                if s.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
    }
}

/// A shared informer for `K`: cheap to clone, every clone sees the same cache.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    index: Arc<RwLock<Index<K>>>,
    handlers: Arc<Mutex<Vec<Handler<K>>>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Change<K>>>>>,
    writer: Arc<Mutex<Option<Writer<K>>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            index: self.index.clone(),
            handlers: self.handlers.clone(),
            subscribers: self.subscribers.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<K> Default for Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// An informer whose cache fills once [`Informer::run`] is driven.
    pub fn new() -> Self {
        let writer = Writer::<K>::default();
        Self {
            store: writer.as_reader(),
            index: Arc::default(),
            handlers: Arc::default(),
            subscribers: Arc::default(),
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    /// The reflector store (what `Controller`s look objects up in).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Runs `f` on every change, synchronously, before subscribers see it.
    pub fn on_change(&self, f: impl Fn(&Change<K>) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .expect("handlers lock")
            .push(Box::new(f));
    }

    /// A stream of every change from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.lock().expect("subscribers lock").push(tx);
        rx
    }

    /// Objects added or updated, as a `Controller` trigger for its main type.
    pub fn applied(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.subscribe().filter_map(|c| async move {
            match c {
                Change::Added(o) | Change::Updated { new: o, .. } => Some(Ok((*o).clone())),
                Change::Deleted(_) => None,
            }
        })
    }

    /// Every version touched (both versions of an update, the last one of a deletion), as an
    /// `owns`/`watches` trigger: a child that changed owner wakes both owners.
    pub fn touched(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.subscribe().flat_map(|c| {
            let v: Vec<Result<K, watcher::Error>> = match c {
                Change::Added(o) | Change::Deleted(o) => vec![Ok((*o).clone())],
                Change::Updated { old, new } => vec![Ok((*old).clone()), Ok((*new).clone())],
            };
            futures::stream::iter(v)
        })
    }

    /// Waits until the first list is in the cache.
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// One object by namespace and name.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(ns))
    }

    /// Every object in namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        let idx = self.index.read().expect("index lock");
        idx.by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|r| self.store.get(r))
            .collect()
    }

    /// Every object whose controller owner has `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<K>> {
        let idx = self.index.read().expect("index lock");
        idx.by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|r| self.store.get(r))
            .collect()
    }

    /// Every object in the cache.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    fn emit(&self, change: Change<K>) {
        for h in self.handlers.lock().expect("handlers lock").iter() {
            h(&change);
        }
        let mut subs = self.subscribers.lock().expect("subscribers lock");
        subs.retain(|tx| tx.unbounded_send(change.clone()).is_ok());
    }

    /// Watches `api` forever, feeding the cache, the handlers and the subscribers (relists after
    /// errors or a 410 on its own; a relist turns into the adds, updates and deletes it implies).
    pub async fn run(self, api: Api<K>) {
        let Some(mut writer) = self.writer.lock().expect("writer lock").take() else {
            tracing::error!("informer started twice");
            return;
        };
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut relist: Vec<K> = Vec::new();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), "watch: {e}");
                    continue;
                }
            };
            match &ev {
                watcher::Event::Apply(obj) => {
                    let r = ObjectRef::from_obj(obj);
                    let old = self.store.get(&r);
                    writer.apply_watcher_event(&ev);
                    let Some(new) = self.store.get(&r) else {
                        continue;
                    };
                    {
                        let mut idx = self.index.write().expect("index lock");
                        if let Some(o) = &old {
                            idx.remove(o);
                        }
                        idx.insert(&new);
                    }
                    self.emit(match old {
                        Some(old) => Change::Updated { old, new },
                        None => Change::Added(new),
                    });
                }
                watcher::Event::Delete(obj) => {
                    let r = ObjectRef::from_obj(obj);
                    let old = self.store.get(&r);
                    writer.apply_watcher_event(&ev);
                    let last = old.unwrap_or_else(|| Arc::new(obj.clone()));
                    self.index.write().expect("index lock").remove(&last);
                    self.emit(Change::Deleted(last));
                }
                watcher::Event::Init => {
                    relist.clear();
                    writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitApply(obj) => {
                    relist.push(obj.clone());
                    writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitDone => {
                    let before: HashMap<ObjectRef<K>, Arc<K>> = self
                        .store
                        .state()
                        .into_iter()
                        .map(|o| (ObjectRef::from_obj(&*o), o))
                        .collect();
                    writer.apply_watcher_event(&ev);
                    let mut changes = Vec::new();
                    let mut seen = HashSet::new();
                    {
                        let mut idx = self.index.write().expect("index lock");
                        *idx = Index::default();
                        for obj in relist.drain(..) {
                            let r = ObjectRef::from_obj(&obj);
                            let Some(new) = self.store.get(&r) else {
                                continue;
                            };
                            idx.insert(&new);
                            seen.insert(r.clone());
                            // Unchanged objects reach controllers too (a resync).
                            match before.get(&r) {
                                None => changes.push(Change::Added(new)),
                                Some(old) => changes.push(Change::Updated {
                                    old: old.clone(),
                                    new,
                                }),
                            }
                        }
                    }
                    for (r, old) in before {
                        if !seen.contains(&r) {
                            changes.push(Change::Deleted(old));
                        }
                    }
                    for c in changes {
                        self.emit(c);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.owner_references = owner.map(|u| {
            vec![OwnerReference {
                uid: u.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        p
    }

    #[test]
    fn index_tracks_namespace_and_owner() {
        let mut idx = Index::<Pod>::default();
        let a = pod("ns", "a", Some("rs1"));
        let b = pod("ns", "b", None);
        idx.insert(&a);
        idx.insert(&b);
        assert_eq!(idx.by_ns["ns"].len(), 2);
        assert_eq!(idx.by_owner["rs1"].len(), 1);
        idx.remove(&a);
        assert!(!idx.by_owner.contains_key("rs1"));
        assert_eq!(idx.by_ns["ns"].len(), 1);
    }
}
