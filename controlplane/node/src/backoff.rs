//! Per-key exponential back-off, as kubelet uses for `CrashLoopBackOff` and `ImagePullBackOff`
//! (`k8s.io/client-go/util/flowcontrol.Backoff`).
//!
//! Each key (kennel uses `<pod uid>/<container name>`) has a current delay and the instant it was
//! last bumped. The first failure sets the delay to [`INITIAL_BACKOFF`]; each further failure
//! doubles it, up to [`MAX_BACKOFF`]. An entry that has been quiet for more than
//! [`RESET_AFTER`] (twice the cap: 10 minutes with kubelet's defaults) counts as expired, so the
//! next failure starts over at the initial delay — this is how "a container that ran for ten
//! minutes is no longer crash-looping" falls out of upstream's code.
//!
//! Time is always passed in (`now`): nothing here reads a clock, so tests are plain tables.
//!
//! How kubelet drives it (`kuberuntime_manager.go` `doBackOff` and the image puller):
//!
//! * **Crash loop**, when a container has exited at `finished_at` and would be restarted:
//!   if [`Backoff::in_backoff_since`]`(key, finished_at, now)` is `Some`, do not restart; report
//!   waiting reason `CrashLoopBackOff` with message
//!   `back-off {format_duration(get(key))} restarting failed container={name} pod={pod}`.
//!   Otherwise call [`Backoff::next_since`]`(key, finished_at, now)` and restart.
//! * **Image pull**: before pulling, if [`Backoff::in_backoff`]`(key, now)` is `Some`, report
//!   `ImagePullBackOff` (`Back-off pulling image "{image}"`); after a failed pull call
//!   [`Backoff::next`]`(key, now)`. Upstream keys this one by `<pod uid>_<image>`.
//! * Periodically call [`Backoff::gc`] (kubelet does so on every housekeeping pass).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first delay after a failure: kubelet's `backOffPeriod` for container restarts and image
/// pulls.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);

/// The largest delay: kubelet's `MaxContainerBackOff` (5 minutes).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long an entry must stay quiet before it expires (twice [`MAX_BACKOFF`], as upstream's
/// `hasExpired` and `GC` use).
pub const RESET_AFTER: Duration = Duration::from_secs(2 * 300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    delay: Duration,
    last_update: Instant,
}

/// Exponential back-off state for many keys.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    /// Kubelet's defaults: [`INITIAL_BACKOFF`] doubling to [`MAX_BACKOFF`].
    fn default() -> Self {
        Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// A back-off starting at `initial` and doubling up to `max`; entries expire after `2 * max`
    /// without an update.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// The current delay for `key`, if it has one (upstream `Get`, which returns 0 instead).
    pub fn get(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Records a failure of `key` at `now` and returns the new delay (upstream `Next(key, now)`).
    pub fn next(&mut self, key: &str, now: Instant) -> Duration {
        self.next_since(key, now, now)
    }

    /// Records a failure of `key` that happened at `event` (e.g. the container's exit time),
    /// observed at `now`, and returns the new delay (upstream `Next(key, event)` with the clock at
    /// `now`).
    ///
    /// If `key` is unknown, or expired relative to `event` (last updated more than `2 * max`
    /// before it — [`RESET_AFTER`] with the defaults), the delay restarts at `initial`; otherwise
    /// it doubles, capped at `max`. The entry's update time becomes `now`.
    pub fn next_since(&mut self, key: &str, event: Instant, now: Instant) -> Duration {
        let delay = match self.entries.get(key) {
            Some(e) if !self.expired(e, event) => e.delay.saturating_mul(2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                last_update: now,
            },
        );
        delay
    }

    /// How much longer `key` must wait, counting from its last update (upstream
    /// `IsInBackOffSinceUpdate(key, now)`); `None` when it may go ahead now.
    pub fn in_backoff(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, now) {
            return None;
        }
        remaining(e.last_update, e.delay, now)
    }

    /// How much longer `key` must wait, counting from `event` (upstream
    /// `IsInBackOffSince(key, event)`): kubelet passes the exited container's finish time, so a
    /// container that crashed long ago may restart at once. `None` when it may go ahead now, or
    /// when the entry had expired by `event`.
    pub fn in_backoff_since(&self, key: &str, event: Instant, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, event) {
            return None;
        }
        remaining(event, e.delay, now)
    }

    /// Forgets `key` (upstream `Reset` / `DeleteEntry`), e.g. when its pod is deleted.
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops every entry not updated for more than `2 * max` before `now` (upstream `GC`).
    pub fn gc(&mut self, now: Instant) {
        let horizon = self.max.saturating_mul(2);
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_update) <= horizon);
    }

    /// Number of keys with back-off state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has back-off state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// After `2 * max` without an update relative to `at`, an entry counts as stable.
    fn expired(&self, e: &Entry, at: Instant) -> bool {
        at.saturating_duration_since(e.last_update) > self.max.saturating_mul(2)
    }
}

fn remaining(start: Instant, delay: Duration, now: Instant) -> Option<Duration> {
    let until = start.checked_add(delay)?;
    let left = until.saturating_duration_since(now);
    (!left.is_zero()).then_some(left)
}

/// Formats a duration as Go's `time.Duration.String` does (`10s`, `2m40s`, `5m0s`, `1h0m0s`,
/// `1.5s`, `300ms`), which is how kubelet's back-off messages print delays.
pub fn format_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".to_string();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}µs", with_fraction(n, 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}ms", with_fraction(n, 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let frac = n % 1_000_000_000;
    out.push_str(&s.to_string());
    if frac > 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn with_fraction(n: u128, unit: u128, width: usize) -> String {
    let (whole, frac) = (n / unit, n % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn delays_double_to_the_cap() {
        // Upstream TestSlowBackoff, with kubelet's numbers: failures 10s apart.
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let want = [10, 20, 40, 80, 160, 300, 300, 300];
        for (i, w) in want.iter().enumerate() {
            let now = t0 + s(10 * i as u64);
            assert_eq!(b.next("k", now), s(*w), "failure {i}");
            assert_eq!(b.get("k"), Some(s(*w)));
        }
    }

    #[test]
    fn quiet_for_twice_the_cap_resets() {
        // (gap since previous failure, expected delay after this failure)
        let t0 = Instant::now();
        let cases: &[(u64, u64)] = &[
            (0, 10),
            (5, 20),
            (5, 40),
            (600, 80), // exactly 2×max is not yet expired
            (601, 10), // more than 2×max: start over
            (1, 20),
        ];
        let mut b = Backoff::default();
        let mut now = t0;
        for (i, &(gap, want)) in cases.iter().enumerate() {
            now += s(gap);
            assert_eq!(b.next("k", now), s(want), "step {i}");
        }
    }

    #[test]
    fn in_backoff_counts_from_last_update() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.in_backoff("k", t0), None, "unknown key");
        b.next("k", t0);
        // (seconds after t0, remaining)
        let cases: &[(u64, Option<u64>)] = &[
            (0, Some(10)),
            (3, Some(7)),
            (9, Some(1)),
            (10, None),
            (11, None),
            (601, None),
        ];
        for &(at, want) in cases {
            assert_eq!(b.in_backoff("k", t0 + s(at)), want.map(s), "at {at}s");
        }
        assert_eq!(b.in_backoff("other", t0), None);
    }

    #[test]
    fn crash_loop_counts_from_exit_time() {
        // The container was restarted at t0 (next_since) and exited at t0+2s.
        let t0 = Instant::now();
        let mut b = Backoff::default();
        b.next_since("k", t0, t0);
        let exited = t0 + s(2);
        // (now after t0, remaining)
        let cases: &[(u64, Option<u64>)] = &[(2, Some(10)), (5, Some(7)), (12, None), (100, None)];
        for &(at, want) in cases {
            assert_eq!(
                b.in_backoff_since("k", exited, t0 + s(at)),
                want.map(s),
                "at {at}s"
            );
        }
        // Restarted at t0+12: the delay doubles because the previous start was recent.
        assert_eq!(b.next_since("k", exited, t0 + s(12)), s(20));
        // It then ran for more than 10 minutes before exiting: no back-off, and the next delay
        // starts over.
        let exited = t0 + s(12 + 601);
        assert_eq!(b.in_backoff_since("k", exited, exited), None);
        assert_eq!(b.next_since("k", exited, exited), s(10));
    }

    #[test]
    fn reset_and_gc() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        b.next("a", t0);
        b.next("a", t0);
        b.next("b", t0 + s(100));
        assert_eq!(b.len(), 2);
        b.reset("a");
        assert_eq!(b.get("a"), None);
        assert_eq!(b.next("a", t0 + s(100)), s(10), "reset starts over");

        b.next("c", t0);
        b.gc(t0 + s(600));
        assert_eq!(b.get("c"), Some(s(10)), "2×max is kept");
        b.gc(t0 + s(601));
        assert_eq!(b.get("c"), None, "older than 2×max is dropped");
        assert_eq!(b.len(), 2);
        b.gc(t0 + s(100 + 601));
        assert!(b.is_empty());
    }

    #[test]
    fn custom_periods() {
        // The shape of KEP-4603's faster decay: 1s doubling to 60s, expiring after 120s.
        let t0 = Instant::now();
        let mut b = Backoff::new(s(1), s(60));
        let got: Vec<u64> = (0..8).map(|i| b.next("k", t0 + s(i)).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.next("k", t0 + s(7 + 121)), s(1));
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (s(10), "10s"),
            (s(40), "40s"),
            (s(80), "1m20s"),
            (s(160), "2m40s"),
            (s(300), "5m0s"),
            (s(3600), "1h0m0s"),
            (s(3661), "1h1m1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_millis(61_005), "1m1.005s"),
        ];
        for &(d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
    }
}
