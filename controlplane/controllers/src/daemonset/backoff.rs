//! The failed-pod back-off of upstream's DaemonSet controller (`flowcontrol.Backoff`, 1 s
//! doubling to 15 min, keyed by DaemonSet and node): a daemon pod that keeps failing on a node
//! (a kubelet rejecting it) is deleted and recreated ever more slowly instead of in a hot loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First back-off.
pub const INITIAL: Duration = Duration::from_secs(1);
/// Largest back-off.
pub const MAX: Duration = Duration::from_secs(15 * 60);

/// Back-off per key: `(current delay, last update)`.
#[derive(Debug, Default)]
pub struct FailedPodsBackoff {
    entries: Mutex<HashMap<String, (Duration, Instant)>>,
}

/// The key of `ds_uid`'s pods on `node`.
pub fn key(ds_uid: &str, node: &str) -> String {
    format!("{ds_uid}/{node}")
}

impl FailedPodsBackoff {
    /// If `key` is still backing off at `now`: its current delay (upstream
    /// `IsInBackOffSinceUpdate` + `Get`).
    pub fn in_backoff(&self, key: &str, now: Instant) -> Option<Duration> {
        let m = self.entries.lock().expect("backoff lock");
        let (delay, at) = m.get(key)?;
        (now.saturating_duration_since(*at) < *delay).then_some(*delay)
    }

    /// Records a failure of `key` at `now` (upstream `Next`): the delay starts at [`INITIAL`]
    /// (also after twice [`MAX`] without failures) and doubles up to [`MAX`].
    pub fn next(&self, key: &str, now: Instant) {
        let mut m = self.entries.lock().expect("backoff lock");
        let e = m.entry(key.to_string()).or_insert((Duration::ZERO, now));
        let expired = now.saturating_duration_since(e.1) > 2 * MAX;
        e.0 = if e.0.is_zero() || expired {
            INITIAL
        } else {
            (e.0 * 2).min(MAX)
        };
        e.1 = now;
    }

    /// Forgets every key of `ds_uid` (the DaemonSet is gone).
    pub fn forget_set(&self, ds_uid: &str) {
        let prefix = format!("{ds_uid}/");
        self.entries
            .lock()
            .expect("backoff lock")
            .retain(|k, _| !k.starts_with(&prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_expires() {
        let b = FailedPodsBackoff::default();
        let t0 = Instant::now();
        let k = key("u", "n1");
        assert_eq!(b.in_backoff(&k, t0), None);
        b.next(&k, t0);
        assert_eq!(b.in_backoff(&k, t0), Some(INITIAL));
        assert_eq!(b.in_backoff(&k, t0 + INITIAL), None);
        b.next(&k, t0 + INITIAL);
        assert_eq!(b.in_backoff(&k, t0 + INITIAL), Some(2 * INITIAL));
        for i in 0..20 {
            b.next(&k, t0 + Duration::from_secs(10 + i));
        }
        assert_eq!(b.in_backoff(&k, t0 + Duration::from_secs(29)), Some(MAX));
        let later = t0 + 3 * MAX;
        b.next(&k, later);
        assert_eq!(b.in_backoff(&k, later), Some(INITIAL));
        assert_eq!(b.in_backoff(&key("u", "n2"), later), None);
        b.forget_set("u");
        assert_eq!(b.in_backoff(&k, later), None);
    }
}
