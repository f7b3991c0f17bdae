//! The scheduling queue, as upstream's: `active` (a heap by priority, then arrival), `backoff`
//! (1 s doubling per attempt up to 10 s) and `unschedulable` (moved back on cluster events, and
//! flushed after 5 minutes as `podMaxInUnschedulablePodsDuration`).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::nodeinfo::PodInfo;

/// First backoff.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod may stay unschedulable before it is retried anyway.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Ready to be popped.
    Active,
    /// Waiting out its backoff.
    Backoff,
    /// Failed to fit; waits for a cluster event.
    Unschedulable,
    /// Popped, its cycle (or binding) running.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    place: Place,
    attempts: u32,
    /// When it entered the queue (ordering among equal priorities).
    since: Instant,
    /// Last failure.
    failed_at: Option<Instant>,
    /// A cluster event arrived while it was in flight.
    moved_in_flight: bool,
    seq: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct HeapItem {
    priority: i32,
    since: Instant,
    seq: u64,
    key: String,
}

impl Ord for HeapItem {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.since.cmp(&self.since))
            .then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Backoff after `attempts` failed attempts: 1 s, 2 s, 4 s, 8 s, 10 s, 10 s ...
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts.max(1) {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

/// The queue of pods waiting for a node.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<HeapItem>,
    seq: u64,
}

/// How many pods are in each place.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Active.
    pub active: usize,
    /// Backoff.
    pub backoff: usize,
    /// Unschedulable.
    pub unschedulable: usize,
    /// In flight.
    pub in_flight: usize,
}

fn spec_changed(a: &PodInfo, b: &PodInfo) -> bool {
    a.pod.spec != b.pod.spec || a.pod.metadata.labels != b.pod.metadata.labels
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.pods.get_mut(key) {
            e.place = Place::Active;
            e.seq = seq;
            self.active.push(HeapItem {
                priority: e.info.priority,
                since: e.since,
                seq,
                key: key.to_string(),
            });
        }
    }

    fn backing_off(e: &Entry, now: Instant) -> bool {
        e.failed_at
            .is_some_and(|f| f + backoff_duration(e.attempts) > now)
    }

    /// Moves one unschedulable/backoff entry to where it belongs now.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if Self::backing_off(e, now) {
            e.place = Place::Backoff;
        } else {
            self.push_active(key);
        }
    }

    /// Adds a new pending pod, or updates a queued one (a changed spec or labels retries an
    /// unschedulable pod).
    pub fn add_or_update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key.clone();
        match self.pods.get_mut(&key) {
            None => {
                self.pods.insert(
                    key.clone(),
                    Entry {
                        info,
                        place: Place::Active,
                        attempts: 0,
                        since: now,
                        failed_at: None,
                        moved_in_flight: false,
                        seq: 0,
                    },
                );
                self.push_active(&key);
            }
            Some(e) => {
                let changed = spec_changed(&e.info, &info);
                let prio_changed = e.info.priority != info.priority;
                e.info = info;
                match e.place {
                    Place::Unschedulable if changed => self.requeue(&key, now),
                    Place::Active if prio_changed => self.push_active(&key),
                    Place::InFlight if changed => e.moved_in_flight = true,
                    _ => {}
                }
            }
        }
    }

    /// Removes a pod (deleted, bound elsewhere, or no longer ours).
    pub fn delete(&mut self, key: &str) {
        self.pods.remove(key);
    }

    /// Whether the queue holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Where `key` is.
    pub fn place(&self, key: &str) -> Option<Place> {
        self.pods.get(key).map(|e| e.place)
    }

    /// Moves expired backoffs to active and old unschedulable pods back into the queue.
    pub fn flush(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| match e.place {
                Place::Backoff => !Self::backing_off(e, now),
                Place::Unschedulable => e
                    .failed_at
                    .is_some_and(|f| now.duration_since(f) >= MAX_IN_UNSCHEDULABLE),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue(&k, now);
        }
    }

    /// The earliest time a backoff ends (for the loop's timer).
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.pods
            .values()
            .filter(|e| e.place == Place::Backoff)
            .filter_map(|e| e.failed_at.map(|f| f + backoff_duration(e.attempts)))
            .min()
    }

    /// Pops the highest-priority active pod (after moving expired backoffs); it is in flight
    /// until [`Self::done`], [`Self::unschedulable`] or [`Self::error`].
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        if self.active.is_empty() {
            self.flush(now);
        }
        while let Some(item) = self.active.pop() {
            let Some(e) = self.pods.get_mut(&item.key) else {
                continue;
            };
            if e.place != Place::Active || e.seq != item.seq {
                continue;
            }
            e.place = Place::InFlight;
            e.attempts += 1;
            e.moved_in_flight = false;
            return Some(e.info.clone());
        }
        None
    }

    /// The pod was scheduled (assumed): it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.pods.remove(key);
    }

    /// The pod fits nowhere: unschedulable, or backoff if a cluster event came meanwhile.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.failed_at = Some(now);
        if e.moved_in_flight {
            e.place = Place::Backoff;
        } else {
            e.place = Place::Unschedulable;
        }
    }

    /// The cycle or binding failed for another reason: backoff. Re-adds `info` if it had left.
    pub fn error(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key.clone();
        let e = self.pods.entry(key).or_insert_with(|| Entry {
            info: info.clone(),
            place: Place::Backoff,
            attempts: 1,
            since: now,
            failed_at: None,
            moved_in_flight: false,
            seq: 0,
        });
        e.info = info;
        e.failed_at = Some(now);
        e.place = Place::Backoff;
    }

    /// A cluster event that may make pods fit (node added or changed, pod deleted or finished):
    /// every unschedulable pod moves to active (or backoff while it is still backing off).
    pub fn move_all_to_active(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .pods
            .iter_mut()
            .filter_map(|(k, e)| match e.place {
                Place::Unschedulable => Some(k.clone()),
                Place::InFlight => {
                    e.moved_in_flight = true;
                    None
                }
                _ => None,
            })
            .collect();
        for k in keys {
            self.requeue(&k, now);
        }
    }

    /// Counts per place.
    pub fn counts(&self) -> QueueCounts {
        let mut c = QueueCounts::default();
        for e in self.pods.values() {
            match e.place {
                Place::Active => c.active += 1,
                Place::Backoff => c.backoff += 1,
                Place::Unschedulable => c.unschedulable += 1,
                Place::InFlight => c.in_flight += 1,
            }
        }
        c
    }

    /// Keys of every queued pod.
    pub fn keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::pod_meta;
    use serde_json::json;

    fn p(name: &str, prio: i32) -> Arc<PodInfo> {
        Arc::new(pod_meta(name, json!({}), json!({"priority": prio})))
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let want = [1, 1, 2, 4, 8, 10, 10, 10];
        for (a, w) in want.iter().enumerate() {
            assert_eq!(
                backoff_duration(a as u32),
                Duration::from_secs(*w),
                "attempt {a}"
            );
        }
    }

    #[test]
    fn priority_then_fifo() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(p("a", 0), t);
        q.add_or_update(p("b", 10), t + Duration::from_millis(1));
        q.add_or_update(p("c", 0), t + Duration::from_millis(2));
        q.add_or_update(p("d", 10), t + Duration::from_millis(3));
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(t).map(|i| i.pod.metadata.name.clone().unwrap())).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[test]
    fn unschedulable_waits_for_event_then_backoff() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(p("a", 0), t);
        let a = q.pop(t).unwrap();
        q.unschedulable(&a.key, t);
        assert_eq!(q.place(&a.key), Some(Place::Unschedulable));
        assert!(
            q.pop(t + Duration::from_secs(60)).is_none(),
            "no event, no retry"
        );
        // An event within the backoff (1 s after the first attempt) goes to backoff.
        q.move_all_to_active(t + Duration::from_millis(500));
        assert_eq!(q.place(&a.key), Some(Place::Backoff));
        assert!(q.pop(t + Duration::from_millis(900)).is_none());
        assert_eq!(q.next_backoff_expiry(), Some(t + Duration::from_secs(1)));
        let a = q.pop(t + Duration::from_secs(1)).unwrap();
        // Second failure: 2 s backoff; an event after it goes straight to active.
        let t2 = t + Duration::from_secs(1);
        q.unschedulable(&a.key, t2);
        q.move_all_to_active(t2 + Duration::from_secs(3));
        assert_eq!(q.place(&a.key), Some(Place::Active));
        assert!(q.pop(t2 + Duration::from_secs(3)).is_some());
    }

    #[test]
    fn flush_after_five_minutes_and_spec_update() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(p("a", 0), t);
        let a = q.pop(t).unwrap();
        q.unschedulable(&a.key, t);
        q.flush(t + Duration::from_secs(299));
        assert_eq!(q.place(&a.key), Some(Place::Unschedulable));
        q.flush(t + MAX_IN_UNSCHEDULABLE);
        assert_eq!(q.place(&a.key), Some(Place::Active));
        let a = q.pop(t + MAX_IN_UNSCHEDULABLE).unwrap();
        q.unschedulable(&a.key, t + MAX_IN_UNSCHEDULABLE);
        // A status-only update does not retry; a label change does.
        q.add_or_update(
            p("a", 0),
            t + MAX_IN_UNSCHEDULABLE + Duration::from_secs(20),
        );
        assert_eq!(q.place(&a.key), Some(Place::Unschedulable));
        let relabeled = Arc::new(pod_meta(
            "a",
            json!({"labels": {"x": "y"}}),
            json!({"priority": 0}),
        ));
        q.add_or_update(
            relabeled,
            t + MAX_IN_UNSCHEDULABLE + Duration::from_secs(20),
        );
        assert_eq!(q.place(&a.key), Some(Place::Active));
    }

    #[test]
    fn event_during_cycle_and_errors() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(p("a", 0), t);
        let a = q.pop(t).unwrap();
        q.move_all_to_active(t);
        q.unschedulable(&a.key, t);
        assert_eq!(
            q.place(&a.key),
            Some(Place::Backoff),
            "an event during the cycle means retry"
        );
        // Binding error re-adds with backoff; delete removes.
        let b = p("b", 0);
        q.error(b.clone(), t);
        assert_eq!(q.place(&b.key), Some(Place::Backoff));
        q.delete(&b.key);
        assert!(!q.contains(&b.key));
        assert_eq!(
            q.counts(),
            QueueCounts {
                backoff: 1,
                ..Default::default()
            }
        );
        q.done(&a.key);
        assert_eq!(q.counts(), QueueCounts::default());
    }
}
