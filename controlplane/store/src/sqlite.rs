//! Embedded store: one SQLite file in WAL mode, a `kv` table for the latest state and an `events`
//! table (the revision log) that watches replay from, plus an in-process broadcast for live events.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    decode_continue, encode_continue, prefix_end, EventKind, KeyValue, ListPage, Store, StoreError,
    WatchEvent, WatchStream,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind INTEGER NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_value BLOB,
    prev_mod_rev INTEGER
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Rows replayed per query when a watch catches up from the log.
const REPLAY_BATCH: i64 = 1000;

struct Writer {
    conn: Connection,
    rev: i64,
    compacted: i64,
}

struct Inner {
    /// Exclusive lock on `kennel.db.lock`: one server per database (live events are in-process).
    _lock: std::fs::File,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    events: broadcast::Sender<WatchEvent>,
}

/// SQLite-backed [`Store`] (the embedded default).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is synced at every commit, so an acknowledged write survives a power loss
    // and its revision is never handed out again (NORMAL may lose the last commits).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database `kennel.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Task(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("kennel.db");
        let lock_path = dir.join("kennel.db.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Task(format!("open {}: {e}", lock_path.display())))?;
        fs4::FileExt::try_lock(&lock)
            .map_err(|_| StoreError::Locked(path.display().to_string()))?;
        let conn = open_conn(&path)?;
        conn.execute_batch(SCHEMA)?;
        let compacted: i64 = conn
            .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let max_event: Option<i64> =
            conn.query_row("SELECT max(rev) FROM events", [], |r| r.get(0))?;
        let rev = max_event.unwrap_or(0).max(compacted);
        let reader = open_conn(&path)?;
        let (events, _) = broadcast::channel(4096);
        Ok(Self {
            inner: Arc::new(Inner {
                _lock: lock,
                writer: Mutex::new(Writer {
                    conn,
                    rev,
                    compacted,
                }),
                reader: Mutex::new(reader),
                events,
            }),
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn current(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value, create_rev, mod_rev FROM kv WHERE key = ?1",
            [key],
            |r| {
                Ok(KeyValue {
                    key: key.to_string(),
                    value: r.get(0)?,
                    create_revision: r.get(1)?,
                    mod_revision: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Applies one write inside a transaction, appends it to the log and publishes it.
fn write(
    inner: &Inner,
    key: &str,
    value: Option<Vec<u8>>,
    check: impl FnOnce(Option<&KeyValue>) -> Result<(), StoreError>,
) -> Result<WatchEvent, StoreError> {
    let mut w = lock(&inner.writer);
    let rev = w.rev + 1;
    let tx = w.conn.transaction()?;
    let prev = current(&tx, key)?;
    check(prev.as_ref())?;
    let event = match value {
        Some(value) => {
            let create_revision = prev.as_ref().map_or(rev, |p| p.create_revision);
            tx.execute(
                "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
                params![key, value, create_revision, rev],
            )?;
            tx.execute(
                "INSERT INTO events (rev, key, kind, value, create_rev, prev_value, prev_mod_rev)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
                params![
                    rev,
                    key,
                    value,
                    create_revision,
                    prev.as_ref().map(|p| &p.value),
                    prev.as_ref().map(|p| p.mod_revision)
                ],
            )?;
            WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_string(),
                    value,
                    create_revision,
                    mod_revision: rev,
                },
                prev,
            }
        }
        None => {
            let Some(p) = prev else {
                return Err(StoreError::NotFound(key.to_string()));
            };
            tx.execute("DELETE FROM kv WHERE key = ?1", [key])?;
            tx.execute(
                "INSERT INTO events (rev, key, kind, value, create_rev, prev_value, prev_mod_rev)
                 VALUES (?1, ?2, 1, ?3, ?4, NULL, ?5)",
                params![rev, key, p.value, p.create_revision, p.mod_revision],
            )?;
            WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: rev,
                    ..p.clone()
                },
                prev: Some(p),
            }
        }
    };
    tx.commit()?;
    w.rev = rev;
    // Sent while the writer lock is held, so subscribers see revisions in order.
    let _ = inner.events.send(event.clone());
    Ok(event)
}

fn check_expected(
    key: &str,
    cur: Option<&KeyValue>,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    let cur = cur.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    match expected {
        Some(e) if e != cur.mod_revision => Err(StoreError::Conflict {
            key: key.to_string(),
            expected: e,
            current: cur.mod_revision,
        }),
        _ => Ok(()),
    }
}

/// For keys in `(start, end)` under `prefix` changed after `rev`: their state at `rev`
/// (`None` when the key did not exist then).
fn changes_since(
    conn: &Connection,
    prefix: &str,
    end: &str,
    start: &str,
    rev: i64,
) -> Result<BTreeMap<String, Option<KeyValue>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, kind, value, create_rev, prev_value, prev_mod_rev FROM events
         WHERE rev > ?1 AND key >= ?2 AND key < ?3 AND key > ?4 ORDER BY rev",
    )?;
    let mut rows = stmt.query(params![rev, prefix, end, start])?;
    let mut out = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        if out.contains_key(&key) {
            continue;
        }
        let kind: i64 = r.get(1)?;
        let value: Vec<u8> = r.get(2)?;
        let create_revision: i64 = r.get(3)?;
        let prev_value: Option<Vec<u8>> = r.get(4)?;
        let prev_mod: Option<i64> = r.get(5)?;
        let before = match (kind, prev_mod) {
            (_, None) => None,
            (0, Some(m)) => prev_value.map(|v| KeyValue {
                key: key.clone(),
                value: v,
                create_revision,
                mod_revision: m,
            }),
            (_, Some(m)) => Some(KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision: m,
            }),
        };
        out.insert(key, before);
    }
    Ok(out)
}

/// Reads logged events with `after < rev <= upto` under `prefix`, at most [`REPLAY_BATCH`].
fn replay(
    inner: &Inner,
    prefix: &str,
    after: i64,
    upto: i64,
) -> Result<(Vec<WatchEvent>, i64), StoreError> {
    let conn = lock(&inner.reader);
    let compacted = lock(&inner.writer).compacted;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after + 1,
            oldest: compacted + 1,
        });
    }
    let end = String::from_utf8_lossy(&prefix_end(prefix)).into_owned();
    let mut stmt = conn.prepare_cached(
        "SELECT rev, key, kind, value, create_rev, prev_value, prev_mod_rev FROM events
         WHERE rev > ?1 AND rev <= ?2 ORDER BY rev LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![after, upto, REPLAY_BATCH])?;
    let mut out = Vec::new();
    let mut last = after;
    while let Some(r) = rows.next()? {
        let rev: i64 = r.get(0)?;
        last = rev;
        let key: String = r.get(1)?;
        if key.as_str() < prefix || key >= end {
            continue;
        }
        let kind: i64 = r.get(2)?;
        let value: Vec<u8> = r.get(3)?;
        let create_revision: i64 = r.get(4)?;
        let prev_value: Option<Vec<u8>> = r.get(5)?;
        let prev_mod: Option<i64> = r.get(6)?;
        let kv = KeyValue {
            key,
            value,
            create_revision,
            mod_revision: rev,
        };
        let (kind, prev) = if kind == 0 {
            let prev = prev_value.zip(prev_mod).map(|(v, m)| KeyValue {
                value: v,
                mod_revision: m,
                ..kv.clone()
            });
            (EventKind::Put, prev)
        } else {
            let prev = prev_mod.map(|m| KeyValue {
                mod_revision: m,
                ..kv.clone()
            });
            (EventKind::Delete, prev)
        };
        out.push(WatchEvent { kind, kv, prev });
    }
    Ok((out, last))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let ev = write(inner, &key, Some(value), |cur| match cur {
                Some(_) => Err(StoreError::AlreadyExists(key.clone())),
                None => Ok(()),
            })?;
            Ok(ev.revision())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| current(&lock(&inner.reader), &key))
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<i64>,
    ) -> Result<i64, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let ev = write(inner, &key, Some(value), |cur| {
                check_expected(&key, cur, expected)
            })?;
            Ok(ev.revision())
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> Result<(KeyValue, i64), StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let ev = write(inner, &key, None, |cur| check_expected(&key, cur, expected))?;
            let rev = ev.revision();
            Ok((ev.prev.unwrap_or(ev.kv), rev))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_string();
        let token = continue_token.map(decode_continue).transpose()?;
        self.blocking(move |inner| {
            let mut conn = lock(&inner.reader);
            let tx = conn.transaction()?;
            let max_event: Option<i64> =
                tx.query_row("SELECT max(rev) FROM events", [], |r| r.get(0))?;
            let compacted: i64 = tx
                .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or(0);
            let revision = max_event.unwrap_or(0).max(compacted);
            let end = String::from_utf8_lossy(&prefix_end(&prefix)).into_owned();
            // Continuation pages are read as of the first page's revision: the latest rows,
            // with keys changed since then rolled back through the event log.
            let (start, list_rev) = match &token {
                Some((k, rv)) => (k.clone(), *rv),
                None => (String::new(), revision),
            };
            if list_rev < compacted {
                return Err(StoreError::Compacted {
                    requested: list_rev,
                    oldest: compacted + 1,
                });
            }
            let changed = if list_rev < revision {
                changes_since(&tx, &prefix, &end, &start, list_rev)?
            } else {
                BTreeMap::new()
            };
            let fetch = if limit == 0 {
                -1
            } else {
                (limit + 1 + changed.len()) as i64
            };
            let mut items = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT key, value, create_rev, mod_rev FROM kv
                     WHERE key >= ?1 AND key < ?2 AND key > ?3 ORDER BY key LIMIT ?4",
                )?;
                let mut rows = stmt.query(params![prefix, end, start, fetch])?;
                while let Some(r) = rows.next()? {
                    let key: String = r.get(0)?;
                    if changed.contains_key(&key) {
                        continue;
                    }
                    items.push(KeyValue {
                        key,
                        value: r.get(1)?,
                        create_revision: r.get(2)?,
                        mod_revision: r.get(3)?,
                    });
                }
            }
            if !changed.is_empty() {
                items.extend(changed.into_values().flatten());
                items.sort_by(|a, b| a.key.cmp(&b.key));
            }
            tx.commit()?;
            let mut continue_token = None;
            if limit > 0 && items.len() > limit {
                items.truncate(limit);
                let last = items.last().map(|kv| kv.key.clone()).unwrap_or_default();
                continue_token = Some(encode_continue(&last, list_rev));
            }
            Ok(ListPage {
                items,
                revision: list_rev,
                continue_token,
                remaining: None,
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, StoreError> {
        let (mut live, start_rev, compacted) = {
            let w = lock(&self.inner.writer);
            (self.inner.events.subscribe(), w.rev, w.compacted)
        };
        if after_revision < compacted {
            return Err(StoreError::Compacted {
                requested: after_revision + 1,
                oldest: compacted + 1,
            });
        }
        let (tx, rx) = mpsc::channel(256);
        let store = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = after_revision;
            let mut upto = start_rev;
            loop {
                // Catch up from the log until `upto`.
                while last < upto {
                    let p = prefix.clone();
                    let res = store
                        .blocking(move |inner| replay(inner, &p, last, upto))
                        .await;
                    match res {
                        Ok((events, new_last)) => {
                            for ev in events {
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                            last = new_last;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                // Then follow live events.
                loop {
                    let msg = tokio::select! {
                        m = live.recv() => m,
                        _ = tx.closed() => return,
                    };
                    match msg {
                        Ok(ev) => {
                            if ev.revision() <= last {
                                continue;
                            }
                            last = ev.revision();
                            if !ev.kv.key.starts_with(&prefix) {
                                continue;
                            }
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            upto = lock(&store.inner.writer).rev;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            let _ = tx
                                .send(Err(StoreError::WatchClosed("store closed".into())))
                                .await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        Ok(lock(&self.inner.writer).rev)
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let mut w = lock(&inner.writer);
            if revision > w.rev {
                return Err(StoreError::FutureRevision(revision));
            }
            if revision <= w.compacted {
                return Ok(());
            }
            let tx = w.conn.transaction()?;
            tx.execute("DELETE FROM events WHERE rev <= ?1", [revision])?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [revision],
            )?;
            tx.commit()?;
            w.compacted = revision;
            Ok(())
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
