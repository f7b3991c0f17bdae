//! Background compaction shared by every backend: history is kept for at least `min_age` or
//! `min_revisions` revisions, whichever keeps more; older revisions answer 410 Gone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Store;

/// How much history to keep and how often to check.
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    /// History younger than this is kept.
    pub min_age: Duration,
    /// At least this many recent revisions are kept.
    pub min_revisions: i64,
    /// How often the compactor wakes up.
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(300),
            min_revisions: 1000,
            interval: Duration::from_secs(60),
        }
    }
}

/// The revision that may be compacted given revision samples `(taken_at, revision)` and `now`.
pub fn compaction_target(
    samples: &VecDeque<(Instant, i64)>,
    now: Instant,
    current: i64,
    policy: &CompactionPolicy,
) -> Option<i64> {
    let old_enough = samples
        .iter()
        .rev()
        .find(|(t, _)| now.duration_since(*t) >= policy.min_age)
        .map(|(_, rev)| *rev)?;
    let target = old_enough.min(current - policy.min_revisions);
    (target > 0).then_some(target)
}

/// Starts the compaction loop; it stops when the returned handle is aborted.
pub fn spawn_compactor(
    store: Arc<dyn Store>,
    policy: CompactionPolicy,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
        let mut compacted = 0;
        loop {
            tokio::time::sleep(policy.interval).await;
            let Ok(current) = store.current_revision().await else {
                continue;
            };
            let now = Instant::now();
            samples.push_back((now, current));
            if let Some(target) = compaction_target(&samples, now, current, &policy) {
                if target > compacted {
                    match store.compact(target).await {
                        Ok(()) => {
                            compacted = target;
                            tracing::debug!(target, backend = store.backend(), "compacted");
                        }
                        Err(e) => tracing::warn!(error = %e, "compaction failed"),
                    }
                }
            }
            while samples.len() > 2 && now.duration_since(samples[1].0) >= policy.min_age {
                samples.pop_front();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_age_and_count() {
        let p = CompactionPolicy::default();
        let now = Instant::now();
        let mut s = VecDeque::new();
        s.push_back((now - Duration::from_secs(400), 5000));
        s.push_back((now - Duration::from_secs(100), 9000));
        // 5 minutes ago the store was at 5000; 1000 revisions back is 8999: keep the larger history.
        assert_eq!(compaction_target(&s, now, 9999, &p), Some(5000));
        // Few revisions: the count rule wins.
        assert_eq!(compaction_target(&s, now, 5500, &p), Some(4500));
        // Nothing old enough yet.
        s.pop_front();
        assert_eq!(compaction_target(&s, now, 9999, &p), None);
    }
}
