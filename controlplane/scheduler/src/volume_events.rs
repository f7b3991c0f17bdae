//! The scheduler's PersistentVolume, PersistentVolumeClaim and StorageClass watches applied to
//! the shared [`VolumeStore`], with relists (objects gone while the watch was down are dropped)
//! and upstream's rule for the queue: an added or updated PV, PVC or StorageClass may make an
//! unschedulable pod fit (`MoveAllToActiveOrBackoffQueue`).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::watcher::Event;

use crate::volumes::{claim_key, Kind, VolumeStore};

/// One watch event of a storage kind.
#[derive(Debug)]
pub enum StorageEvent {
    /// A PersistentVolume event.
    Pv(Box<Event<PersistentVolume>>),
    /// A PersistentVolumeClaim event.
    Pvc(Box<Event<PersistentVolumeClaim>>),
    /// A StorageClass event.
    Class(Box<Event<StorageClass>>),
}

/// Relist bookkeeping for the three storage watches.
#[derive(Debug, Default)]
pub struct StorageWatches {
    seen: [Option<HashSet<String>>; 3],
    synced: [bool; 3],
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Pv => 0,
        Kind::Pvc => 1,
        Kind::Class => 2,
    }
}

fn name_key<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

impl StorageWatches {
    /// Whether every storage watch has listed once.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Applies `ev` to `store`; true when pods waiting for a cluster event should be retried.
    pub fn apply(&mut self, store: &VolumeStore, ev: StorageEvent) -> bool {
        match ev {
            StorageEvent::Pv(e) => {
                self.apply_kind(store, Kind::Pv, *e, name_key, |s, o| s.apply_pv(o))
            }
            StorageEvent::Pvc(e) => {
                self.apply_kind(store, Kind::Pvc, *e, claim_key, |s, o| s.apply_pvc(o))
            }
            StorageEvent::Class(e) => {
                self.apply_kind(store, Kind::Class, *e, name_key, |s, o| s.apply_class(o))
            }
        }
    }

    fn apply_kind<K>(
        &mut self,
        store: &VolumeStore,
        kind: Kind,
        ev: Event<K>,
        key: fn(&K) -> String,
        put: fn(&VolumeStore, K),
    ) -> bool {
        let i = slot(kind);
        match ev {
            Event::Apply(o) => {
                put(store, o);
                true
            }
            // Upstream registers PV/PVC/StorageClass Add and Update only: a deletion makes no
            // pod fit that did not fit before.
            Event::Delete(o) => {
                store.remove(kind, &key(&o));
                false
            }
            Event::Init => {
                self.seen[i] = Some(HashSet::new());
                false
            }
            Event::InitApply(o) => {
                if let Some(s) = &mut self.seen[i] {
                    s.insert(key(&o));
                }
                put(store, o);
                false
            }
            Event::InitDone => {
                // Objects the relist no longer shows are gone.
                if let Some(seen) = self.seen[i].take() {
                    for k in store.keys(kind) {
                        if !seen.contains(&k) {
                            store.remove(kind, &k);
                        }
                    }
                }
                self.synced[i] = true;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pvc(name: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"}})).unwrap()
    }

    fn pv(name: &str) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    #[test]
    fn events_and_relists() {
        let store = VolumeStore::new();
        let mut w = StorageWatches::default();
        assert!(!w.synced());
        assert!(!w.apply(&store, StorageEvent::Pvc(Box::new(Event::Init))));
        assert!(!w.apply(
            &store,
            StorageEvent::Pvc(Box::new(Event::InitApply(pvc("a"))))
        ));
        assert!(w.apply(&store, StorageEvent::Pvc(Box::new(Event::InitDone))));
        assert!(!w.apply(&store, StorageEvent::Pv(Box::new(Event::Init))));
        assert!(!w.apply(
            &store,
            StorageEvent::Pv(Box::new(Event::InitApply(pv("v1"))))
        ));
        assert!(w.apply(&store, StorageEvent::Pv(Box::new(Event::InitDone))));
        assert!(w.apply(&store, StorageEvent::Pv(Box::new(Event::Apply(pv("v2"))))));
        assert!(!w.synced(), "classes not listed yet");
        assert!(w.apply(&store, StorageEvent::Class(Box::new(Event::InitDone))));
        assert!(w.synced());
        assert!(store.lock().pvc("ns/a").is_some());
        assert!(store.lock().pv("v1").is_some() && store.lock().pv("v2").is_some());
        // A relist that no longer shows "a" drops it; new objects arrive.
        w.apply(&store, StorageEvent::Pvc(Box::new(Event::Init)));
        w.apply(
            &store,
            StorageEvent::Pvc(Box::new(Event::InitApply(pvc("b")))),
        );
        w.apply(&store, StorageEvent::Pvc(Box::new(Event::InitDone)));
        assert!(store.lock().pvc("ns/a").is_none());
        assert!(store.lock().pvc("ns/b").is_some());
        assert!(!w.apply(&store, StorageEvent::Pv(Box::new(Event::Delete(pv("v1"))))));
        assert!(store.lock().pv("v1").is_none());
    }
}
