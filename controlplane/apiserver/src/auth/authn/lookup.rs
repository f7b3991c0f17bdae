//! Reads the objects authentication depends on (ServiceAccounts, pods, Secrets, Nodes).

use serde_json::Value;

use kennel_store::{Store, StoreError};

/// The stored object `plural` (core/v1) `ns/name`, decoded; `None` when absent.
pub async fn get(
    store: &dyn Store,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Option<Value>, StoreError> {
    let Some(def) = crate::registry::find("", "v1", plural) else {
        return Ok(None);
    };
    let Some(kv) = store.get(&def.key(ns, name)).await? else {
        return Ok(None);
    };
    Ok(crate::handlers::decode(&kv).ok())
}

/// `metadata.uid` of an object.
pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// Whether an object's `metadata.deletionTimestamp` lies in the past (its grace period is over).
pub fn deleted(obj: &Value, now: i64) -> bool {
    match obj["metadata"]["deletionTimestamp"].as_str() {
        None => false,
        Some(ts) => chrono::DateTime::parse_from_rfc3339(ts)
            .map(|t| t.timestamp() <= now)
            .unwrap_or(true),
    }
}
