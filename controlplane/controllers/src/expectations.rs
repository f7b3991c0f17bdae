//! Expectations, as client-go's `UIDTrackingControllerExpectations`: a controller that created
//! or deleted k pods does not act on that key again until its informer has seen those k changes
//! (or [`EXPECTATIONS_TTL`] has passed), so it never acts twice on a stale cache.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long expectations hold before they are considered stale and the key syncs anyway.
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    /// Pod keys (`ns/name`) whose deletion we wait for.
    deleting: HashSet<String>,
    at: Instant,
}

/// Outstanding expectations per controller key.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    /// Whether `key` may sync now; `None` means yes, `Some(d)` means not before `d` from now
    /// (when the expectations expire) unless the awaited changes arrive first.
    pub fn pending(&self, key: &str, now: Instant) -> Option<Duration> {
        let map = self.inner.lock().expect("expectations lock");
        let e = map.get(key)?;
        if e.add <= 0 && e.del <= 0 {
            return None;
        }
        let age = now.saturating_duration_since(e.at);
        if age >= EXPECTATIONS_TTL {
            return None;
        }
        Some(EXPECTATIONS_TTL - age)
    }

    /// Whether `key` may sync now.
    pub fn satisfied(&self, key: &str) -> bool {
        self.pending(key, Instant::now()).is_none()
    }

    /// Expects `n` creations for `key` (replacing earlier expectations).
    pub fn expect_creations(&self, key: &str, n: usize) {
        self.set(key, n as i64, HashSet::new());
    }

    /// Expects the deletion of these pods (`ns/name`) for `key`.
    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = pods.into_iter().collect();
        self.set(key, 0, set);
    }

    /// Expects `n` creations and the deletion of these pods (`ns/name`) for `key` at once (a
    /// DaemonSet sync does both).
    pub fn expect(&self, key: &str, n: usize, pods: impl IntoIterator<Item = String>) {
        self.set(key, n as i64, pods.into_iter().collect());
    }

    fn set(&self, key: &str, add: i64, deleting: HashSet<String>) {
        let del = deleting.len() as i64;
        self.inner.lock().expect("expectations lock").insert(
            key.to_string(),
            Expectation {
                add,
                del,
                deleting,
                at: Instant::now(),
            },
        );
    }

    /// One creation for `key` was seen (or will never happen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.inner.lock().expect("expectations lock").get_mut(key) {
            e.add -= 1;
        }
    }

    /// The deletion of pod `pod` (`ns/name`) for `key` was seen (or will never happen); only
    /// pods we asked to delete count.
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.inner.lock().expect("expectations lock").get_mut(key) {
            if e.deleting.remove(pod) {
                e.del -= 1;
            }
        }
    }

    /// Forgets `key` (its controller object is gone).
    pub fn forget(&self, key: &str) {
        self.inner.lock().expect("expectations lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_key_is_satisfied() {
        assert!(Expectations::default().satisfied("rs/a"));
    }

    #[test]
    fn creations_count_down() {
        let e = Expectations::default();
        e.expect_creations("k", 2);
        assert!(!e.satisfied("k"));
        e.creation_observed("k");
        assert!(!e.satisfied("k"));
        e.creation_observed("k");
        assert!(e.satisfied("k"));
    }

    #[test]
    fn only_expected_deletions_count() {
        let e = Expectations::default();
        e.expect_deletions("k", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("k", "ns/other");
        e.deletion_observed("k", "ns/a");
        e.deletion_observed("k", "ns/a");
        assert!(!e.satisfied("k"));
        e.deletion_observed("k", "ns/b");
        assert!(e.satisfied("k"));
    }

    #[test]
    fn creations_and_deletions_together() {
        let e = Expectations::default();
        e.expect("k", 1, ["ns/a".to_string()]);
        e.creation_observed("k");
        assert!(!e.satisfied("k"));
        e.deletion_observed("k", "ns/a");
        assert!(e.satisfied("k"));
    }

    #[test]
    fn expire_after_ttl() {
        let e = Expectations::default();
        e.expect_creations("k", 1);
        let now = Instant::now();
        let left = e.pending("k", now).expect("pending");
        assert!(left <= EXPECTATIONS_TTL);
        assert!(e.pending("k", now + EXPECTATIONS_TTL).is_none());
        e.forget("k");
        assert!(e.satisfied("k"));
    }
}
