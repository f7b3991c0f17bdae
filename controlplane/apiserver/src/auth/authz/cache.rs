//! The watch-maintained [`Index`]: loaded with a `list` of each of its [`PREFIXES`] (the RBAC
//! kinds, pods, PersistentVolumeClaims, PersistentVolumes), then kept current by one store watch
//! from the oldest list revision (relisting when the watch ends or its revision is compacted).
//!
//! **Freshness.** The watch covers every key (events of other kinds only advance the applied
//! revision; their values are never parsed), so the applied revision follows the store's. A
//! decision that would deny first compares it with the store's `current_revision()`: when the
//! store is ahead (e.g. a RoleBinding was written a moment ago), the decision waits until the
//! index has applied that revision — at most [`CATCH_UP`] — and is made again. Allowed requests
//! never wait and never touch the store; a revocation therefore takes effect when the watch
//! delivers it (milliseconds), as with upstream's informer-backed RBAC.

use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use futures::StreamExt;
use kennel_store::{EventKind, Store, StoreError, WatchEvent, WatchStream};
use tokio::sync::{oneshot, watch};

use super::index::{Index, PREFIXES};

/// Longest a would-be denial waits for the index to catch up with the store.
pub const CATCH_UP: Duration = Duration::from_secs(2);

/// Pause before relisting after the watch ended.
const RELIST_BACKOFF: Duration = Duration::from_millis(200);

/// The index and the revision it has applied.
pub struct Cache {
    store: Arc<dyn Store>,
    index: RwLock<Index>,
    applied: watch::Sender<i64>,
    /// Dropped with the cache: ends the follower (and with it the store watch).
    _stop: oneshot::Sender<()>,
}

/// The revision of each list, by position in [`PREFIXES`].
type Revs = [i64; PREFIXES.len()];

/// A freshly listed index: the index, the revisions of its lists, and the watch from the oldest.
struct Listed {
    index: Index,
    revs: Revs,
    stream: WatchStream,
}

fn oldest(revs: &Revs) -> i64 {
    revs.iter().copied().min().unwrap_or_default()
}

async fn list_into(store: &dyn Store, prefix: &str, index: &mut Index) -> Result<i64, StoreError> {
    let page = store.list(prefix, 0, None).await?;
    for kv in &page.items {
        index.apply_put(&kv.key, &kv.value);
    }
    Ok(page.revision)
}

async fn load(store: &dyn Store) -> Result<Listed, StoreError> {
    let mut index = Index::default();
    let mut revs: Revs = Default::default();
    for (rev, prefix) in revs.iter_mut().zip(PREFIXES) {
        *rev = list_into(store, prefix, &mut index).await?;
    }
    let stream = store.watch("/", oldest(&revs)).await?;
    Ok(Listed {
        index,
        revs,
        stream,
    })
}

impl Cache {
    /// Lists, then follows the store in a background task (which ends with the cache).
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        let listed = load(store.as_ref()).await?;
        let from = oldest(&listed.revs);
        let (stop_tx, stop_rx) = oneshot::channel();
        let cache = Arc::new(Cache {
            store,
            index: RwLock::new(listed.index),
            applied: watch::channel(from).0,
            _stop: stop_tx,
        });
        let follower = follow(Arc::downgrade(&cache), listed.stream, listed.revs);
        tokio::spawn(async move {
            tokio::select! {
                _ = stop_rx => {}
                () = follower => {}
            }
        });
        Ok(cache)
    }

    /// The index (held briefly, never across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last store revision the index has applied.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits (at most [`CATCH_UP`]) until the index has applied the store's current revision;
    /// false when it already had (nothing new to decide on).
    pub async fn catch_up(&self) -> bool {
        let Ok(current) = self.store.current_revision().await else {
            return false;
        };
        if self.applied() >= current {
            return false;
        }
        let mut rx = self.applied.subscribe();
        if tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= current))
            .await
            .is_err()
        {
            tracing::debug!(
                current,
                applied = self.applied(),
                "authorization index lags the store"
            );
        }
        true
    }

    fn apply(&self, ev: &WatchEvent, revs: &Revs) {
        let rev = ev.revision();
        let key = ev.kv.key.as_str();
        // An event the list of its prefix already contained is not applied again.
        let relevant = PREFIXES
            .iter()
            .zip(revs)
            .any(|(prefix, listed)| key.starts_with(prefix) && rev > *listed);
        if relevant {
            let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
            match ev.kind {
                EventKind::Put => idx.apply_put(key, &ev.kv.value),
                EventKind::Delete => idx.apply_delete(key),
            }
        }
        self.applied.send_if_modified(|r| {
            let newer = rev > *r;
            if newer {
                *r = rev;
            }
            newer
        });
    }

    fn replace(&self, index: Index, from: i64) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = index;
        self.applied.send_if_modified(|r| {
            let newer = from > *r;
            if newer {
                *r = from;
            }
            newer
        });
    }
}

async fn follow(cache: Weak<Cache>, mut stream: WatchStream, mut revs: Revs) {
    loop {
        while let Some(ev) = stream.next().await {
            let Some(c) = cache.upgrade() else { return };
            match ev {
                Ok(ev) => c.apply(&ev, &revs),
                Err(e) => {
                    tracing::warn!(error = %e, "authorization watch ended; relisting");
                    break;
                }
            }
        }
        loop {
            tokio::time::sleep(RELIST_BACKOFF).await;
            let Some(c) = cache.upgrade() else { return };
            match load(c.store.as_ref()).await {
                Ok(listed) => {
                    c.replace(listed.index, oldest(&listed.revs));
                    revs = listed.revs;
                    stream = listed.stream;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "authorization relist failed"),
            }
        }
    }
}
