//! The control plane's key-value store: Kubernetes' MVCC semantics over SQLite (default) or etcd.
//!
//! Every write gets the next value of one global, strictly increasing revision; an object's
//! `resourceVersion` is the revision of its last write (`mod_revision`). Updates and deletes are
//! compare-and-swap on that revision. Watches replay the ordered event log from any revision still
//! retained; older revisions are compacted away and answer [`StoreError::Compacted`] (HTTP 410).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compactor;
pub mod etcd;
pub mod sqlite;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use compactor::{spawn_compactor, CompactionPolicy};
pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

/// Errors of the store layer; the API server maps each to a Kubernetes `Status` reason.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Create found the key present.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// Update or delete found no such key.
    #[error("key {0} not found")]
    NotFound(String),
    /// The caller's expected revision is not the key's current one.
    #[error("key {key}: expected revision {expected}, current is {current}")]
    Conflict {
        /// Key that was written.
        key: String,
        /// Revision the caller expected.
        expected: i64,
        /// Revision the key has now.
        current: i64,
    },
    /// The requested revision was compacted away.
    #[error("revision {requested} is compacted (oldest retained {oldest})")]
    Compacted {
        /// Revision asked for.
        requested: i64,
        /// Oldest revision still available.
        oldest: i64,
    },
    /// A revision in the future was requested.
    #[error("revision {0} is newer than the store")]
    FutureRevision(i64),
    /// The continue token is malformed.
    #[error("invalid continue token")]
    BadContinue,
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// etcd failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A watcher fell too far behind, or the backend closed the stream.
    #[error("watch stream ended: {0}")]
    WatchClosed(String),
    /// Another process has the SQLite database open.
    #[error("{0} is locked by another kennel process")]
    Locked(String),
    /// A blocking task failed.
    #[error("store task: {0}")]
    Task(String),
}

/// A stored key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key, e.g. `/registry/core/pods/default/web`.
    pub key: String,
    /// Opaque value (the API server stores JSON).
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: i64,
    /// Revision of the last write (the `resourceVersion`).
    pub mod_revision: i64,
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, the last value with `mod_revision` = the delete's revision.
    pub kv: KeyValue,
    /// The value before the change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// Revision at which this change happened.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// A page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Entries in key order.
    pub items: Vec<KeyValue>,
    /// Store revision the page was read at.
    pub revision: i64,
    /// Opaque token for the next page, if more keys remain.
    pub continue_token: Option<String>,
    /// Number of keys remaining after this page, when known.
    pub remaining: Option<i64>,
}

/// Ordered stream of changes; ends with an error if the watcher can no longer be served gap-free.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// MVCC key-value store shared by every backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `key` if absent; returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError>;
    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Replaces `key` if its current `mod_revision` equals `expected` (or unconditionally when `None`,
    /// but it must exist); returns the new revision.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<i64>,
    ) -> Result<i64, StoreError>;
    /// Deletes `key` if its current `mod_revision` equals `expected` (or unconditionally when `None`);
    /// returns the deleted entry and the delete's revision.
    async fn delete(&self, key: &str, expected: Option<i64>)
        -> Result<(KeyValue, i64), StoreError>;
    /// Lists keys under `prefix` in key order, at most `limit` (0 = all), continuing after a token.
    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, StoreError>;
    /// Streams every change under `prefix` with a revision greater than `after_revision`.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, StoreError>;
    /// The latest revision.
    async fn current_revision(&self) -> Result<i64, StoreError>;
    /// Discards history up to and including `revision`; watches from before it answer `Compacted`.
    async fn compact(&self, revision: i64) -> Result<(), StoreError>;
    /// Short backend name for logs and benchmarks.
    fn backend(&self) -> &'static str;
}

/// Encodes a continue token: the last key returned and the revision of the first page.
pub fn encode_continue(last_key: &str, revision: i64) -> String {
    use base64::Engine;
    let raw = serde_json::json!({"k": last_key, "rv": revision}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a token made by [`encode_continue`].
pub fn decode_continue(token: &str) -> Result<(String, i64), StoreError> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::BadContinue)?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| StoreError::BadContinue)?;
    let key = v["k"].as_str().ok_or(StoreError::BadContinue)?.to_string();
    let rv = v["rv"].as_i64().ok_or(StoreError::BadContinue)?;
    Ok((key, rv))
}

/// The smallest string greater than every key starting with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_roundtrip() {
        let t = encode_continue("/registry/pods/a", 42);
        assert_eq!(
            decode_continue(&t).unwrap(),
            ("/registry/pods/a".into(), 42)
        );
        assert!(decode_continue("!!").is_err());
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }
}
