//! Events expire, as upstream's `--event-ttl` (1 h by default) does with etcd leases: a
//! background sweep deletes every Event whose last sighting (`lastTimestamp`, else `eventTime`,
//! else `creationTimestamp`) is older than the TTL, so a busy cluster's store does not grow
//! without bound with events nobody reads.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kennel_store::{Store, StoreError};
use serde_json::Value;

/// Upstream's default `--event-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// When an event was last seen, by the fields both Event APIs write.
pub fn last_seen(ev: &Value) -> Option<DateTime<Utc>> {
    ["lastTimestamp", "eventTime", "deprecatedLastTimestamp"]
        .iter()
        .map(|k| &ev[*k])
        .chain(std::iter::once(&ev["metadata"]["creationTimestamp"]))
        .filter_map(Value::as_str)
        .find_map(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Deletes the events older than `ttl` at `now`; returns how many went.
pub async fn sweep(
    store: &dyn Store,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let def = crate::registry::find("", "v1", "events").expect("events registered");
    let cutoff = now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let mut gone = 0;
    for kv in store.list(&def.key_prefix(), 0, None).await?.items {
        let Ok(ev) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if last_seen(&ev).is_some_and(|t| t < cutoff) {
            match store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => gone += 1,
                // Updated (seen again) or deleted meanwhile: leave it to the next sweep.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(gone)
}

/// Sweeps every `ttl / 10` (at least every minute) until dropped.
pub fn spawn(store: Arc<dyn Store>, ttl: Duration) -> tokio::task::JoinHandle<()> {
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match sweep(store.as_ref(), ttl, Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "events expired"),
                Err(e) => tracing::warn!(error = %e, "event expiry sweep failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn old_events_go_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = kennel_store::SqliteStore::open(dir.path()).unwrap();
        let key = |n: &str| format!("/registry/core/events/default/{n}");
        let put = |n: &'static str, v: Value| {
            let store = store.clone();
            async move {
                store
                    .create(&key(n), serde_json::to_vec(&v).unwrap())
                    .await
                    .unwrap()
            }
        };
        put(
            "old",
            json!({"metadata": {"name": "old"}, "lastTimestamp": "2026-12-01T10:00:00Z"}),
        )
        .await;
        put(
            "new",
            json!({"metadata": {"name": "new"}, "lastTimestamp": "2026-12-01T11:30:00Z"}),
        )
        .await;
        put(
            "micro",
            json!({"metadata": {"name": "micro"}, "eventTime": "2026-12-01T09:00:00.123456Z"}),
        )
        .await;
        put(
            "created",
            json!({"metadata": {"name": "created", "creationTimestamp": "2026-12-01T11:59:00Z"}}),
        )
        .await;
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let gone = sweep(&store, DEFAULT_TTL, now).await.unwrap();
        assert_eq!(gone, 2);
        let left: Vec<String> = store
            .list("/registry/core/events/", 0, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(left, vec![key("created"), key("new")]);
    }
}
