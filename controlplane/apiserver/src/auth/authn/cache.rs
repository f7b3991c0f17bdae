//! A short-lived cache of verified ServiceAccount tokens, keyed by the token's SHA-256, so the
//! hot path skips the signature check and the store reads.
//!
//! An entry lives at most [`TTL`] and never past the token's own expiry. On top of that a watch
//! on ServiceAccounts, pods, Secrets and Nodes empties the cache whenever one is deleted (or
//! marked for deletion), so a deleted object's token is refused at once; while that watch is not
//! running (no runtime, store trouble) the cache is not used at all. A generation counter keeps a
//! verification that raced with a deletion from caching its stale answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::auth::UserInfo;
use kennel_store::{EventKind, Store, WatchEvent};

/// How long a verified token is trusted without looking at the store again.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries kept at most (expired ones are dropped first, then everything).
const MAX_ENTRIES: usize = 4096;
/// The objects whose deletion invalidates tokens.
const WATCHED: [&str; 4] = ["serviceaccounts", "pods", "secrets", "nodes"];

type Digest = [u8; 32];

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest, (UserInfo, Instant)>,
    generation: u64,
}

/// The cache.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
    /// Mirrors `Inner::generation` for a lock-free read before verification.
    generation: AtomicU64,
    /// Whether the invalidating watch is running.
    live: AtomicBool,
}

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation to pass to [`TokenCache::put`]; read it before verifying.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The cached user of `token`, if still fresh (and the cache is live).
    pub fn get(&self, token: &str) -> Option<UserInfo> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let key = digest(token);
        let mut m = self.lock();
        match m.entries.get(&key) {
            Some((u, until)) if Instant::now() < *until => Some(u.clone()),
            Some(_) => {
                m.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches `user` for `token`, whose expiry is `secs_left` seconds away, unless the cache
    /// was invalidated since `generation` was read (or is not live).
    pub fn put(&self, token: &str, user: &UserInfo, secs_left: i64, generation: u64) {
        if secs_left <= 0 || !self.live.load(Ordering::SeqCst) {
            return;
        }
        let ttl = TTL.min(Duration::from_secs(secs_left as u64));
        let now = Instant::now();
        let mut m = self.lock();
        if m.generation != generation {
            return;
        }
        if m.entries.len() >= MAX_ENTRIES {
            m.entries.retain(|_, (_, until)| *until > now);
            if m.entries.len() >= MAX_ENTRIES {
                m.entries.clear();
            }
        }
        m.entries.insert(digest(token), (user.clone(), now + ttl));
    }

    /// Forgets every entry (and every verification in flight).
    pub fn invalidate(&self) {
        let mut m = self.lock();
        m.generation += 1;
        self.generation.store(m.generation, Ordering::SeqCst);
        m.entries.clear();
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        self.invalidate();
    }
}

/// Whether a change can invalidate a token: a deletion, or a deletion mark.
fn invalidates(ev: &WatchEvent) -> bool {
    const MARK: &[u8] = b"\"deletionTimestamp\"";
    ev.kind == EventKind::Delete || ev.kv.value.windows(MARK.len()).any(|w| w == MARK)
}

/// Starts the watch that invalidates `cache` (on the current tokio runtime; without one the
/// cache stays off). The task ends when the cache is dropped; abort the handle to end it sooner.
pub fn spawn_invalidator(
    store: Arc<dyn Store>,
    cache: &Arc<TokenCache>,
) -> Option<tokio::task::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let weak: Weak<TokenCache> = Arc::downgrade(cache);
    Some(handle.spawn(async move {
        loop {
            if let Err(e) = watch_once(store.as_ref(), &weak).await {
                tracing::warn!(error = %e, "token cache watch failed; cache off until it resumes");
            }
            match weak.upgrade() {
                Some(c) => c.set_live(false),
                None => return,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

async fn watch_once(
    store: &dyn Store,
    cache: &Weak<TokenCache>,
) -> Result<(), kennel_store::StoreError> {
    let rev = store.current_revision().await?;
    let mut streams = Vec::new();
    for plural in WATCHED {
        let def = crate::registry::find("", "v1", plural).expect("core resource registered");
        streams.push(store.watch(&def.key_prefix(), rev).await?);
    }
    let mut events = futures::stream::select_all(streams);
    match cache.upgrade() {
        Some(c) => c.set_live(true),
        None => return Ok(()),
    }
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let Some(c) = cache.upgrade() else {
            return Ok(());
        };
        if invalidates(&ev) {
            c.invalidate();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_entries_only_and_generations() {
        let c = TokenCache::default();
        let u = UserInfo::new("u", &[]);
        c.put("a", &u, 100, c.generation());
        assert_eq!(c.get("a"), None, "not live: never cached");
        c.set_live(true);
        c.put("a", &u, 100, c.generation());
        c.put("b", &u, 0, c.generation());
        assert_eq!(c.get("a"), Some(u.clone()));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("c"), None);
        // A verification that raced with an invalidation is not cached.
        let g = c.generation();
        c.invalidate();
        assert_eq!(c.get("a"), None);
        c.put("a", &u, 100, g);
        assert_eq!(c.get("a"), None);
    }
}
