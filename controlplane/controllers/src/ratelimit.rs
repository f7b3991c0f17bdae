//! The per-key exponential failure rate limiter of client-go's default controller queue
//! (`ItemExponentialFailureRateLimiter(5ms, 1000s)`): each failure of a key doubles its delay,
//! a success forgets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// Largest retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(1000);

/// Failure counts per key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    failures: Mutex<HashMap<String, u32>>,
}

/// The delay after `failures` earlier failures: `base * 2^failures`, capped at `max`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures >= 32 {
        return max;
    }
    base.checked_mul(1u32 << failures)
        .map_or(max, |d| d.min(max))
}

impl RateLimiter {
    /// Records a failure of `key`; returns how long to wait before retrying it.
    pub fn when(&self, key: &str) -> Duration {
        let mut m = self.failures.lock().expect("rate limiter lock");
        let n = m.entry(key.to_string()).or_insert(0);
        let d = backoff(*n, BASE_DELAY, MAX_DELAY);
        *n = n.saturating_add(1);
        d
    }

    /// `key` succeeded: its next failure starts from the base delay again.
    pub fn forget(&self, key: &str) {
        self.failures.lock().expect("rate limiter lock").remove(key);
    }

    /// How many failures of `key` are on record.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .expect("rate limiter lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_table() {
        let ms = Duration::from_millis;
        let cases = [
            (0, ms(5)),
            (1, ms(10)),
            (2, ms(20)),
            (10, ms(5120)),
            (17, ms(655_360)),
            (18, MAX_DELAY),
            (40, MAX_DELAY),
        ];
        for (n, want) in cases {
            assert_eq!(backoff(n, BASE_DELAY, MAX_DELAY), want, "failures {n}");
        }
    }

    #[test]
    fn per_key_and_forget() {
        let r = RateLimiter::default();
        assert_eq!(r.when("a"), Duration::from_millis(5));
        assert_eq!(r.when("a"), Duration::from_millis(10));
        assert_eq!(r.when("b"), Duration::from_millis(5));
        assert_eq!(r.failures("a"), 2);
        r.forget("a");
        assert_eq!(r.when("a"), Duration::from_millis(5));
    }
}
