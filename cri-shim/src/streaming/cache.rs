//! The pending streaming requests, as upstream kubelet's streaming request cache keeps them: a
//! validated CRI `Exec`/`Attach`/`PortForward` waits here under a random single-use token until
//! its URL is requested; tokens expire after [`TOKEN_TTL`] and at most [`MAX_PENDING`] wait at
//! once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a token stays valid (upstream's `CacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests waiting at once (upstream's `maxInFlight`).
pub const MAX_PENDING: usize = 1000;
/// Random bytes per token (base64url without padding: 22 characters).
const TOKEN_BYTES: usize = 16;

/// Errors of the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Every slot holds a request that has not expired.
    #[error("too many pending streaming requests ({0}): try again later")]
    Full(usize),
}

/// Tokens and their requests, with their expiry.
#[derive(Debug)]
pub struct RequestCache<T> {
    entries: HashMap<String, (Instant, T)>,
    ttl: Duration,
    max: usize,
}

impl<T> Default for RequestCache<T> {
    fn default() -> Self {
        Self::new(TOKEN_TTL, MAX_PENDING)
    }
}

impl<T> RequestCache<T> {
    /// A cache whose tokens live `ttl`, holding at most `max` requests.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
            max,
        }
    }

    /// Stores `req`; returns its token.
    pub fn insert(&mut self, req: T) -> Result<String, CacheError> {
        self.insert_at(req, Instant::now())
    }

    /// As [`RequestCache::insert`], at time `now`.
    pub fn insert_at(&mut self, req: T, now: Instant) -> Result<String, CacheError> {
        if self.entries.len() >= self.max {
            self.entries.retain(|_, (expires, _)| *expires > now);
        }
        if self.entries.len() >= self.max {
            return Err(CacheError::Full(self.max));
        }
        let token = loop {
            let t = new_token();
            if !self.entries.contains_key(&t) {
                break t;
            }
        };
        self.entries.insert(token.clone(), (now + self.ttl, req));
        Ok(token)
    }

    /// Takes the request of `token`: None when unknown, already used or expired.
    pub fn consume(&mut self, token: &str) -> Option<T> {
        self.consume_at(token, Instant::now())
    }

    /// As [`RequestCache::consume`], at time `now`.
    pub fn consume_at(&mut self, token: &str, now: Instant) -> Option<T> {
        let (expires, req) = self.entries.remove(token)?;
        (expires > now).then_some(req)
    }

    /// Requests held (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; TOKEN_BYTES];
    crate::state::fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use() {
        let mut c = RequestCache::default();
        let t = c.insert("exec").unwrap();
        assert_eq!(t.len(), 22);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(c.consume(&t), Some("exec"));
        assert_eq!(c.consume(&t), None, "reused");
        assert_eq!(c.consume("unknown"), None);
        let a = c.insert("a").unwrap();
        let b = c.insert("b").unwrap();
        assert_ne!(a, b);
        assert_eq!((c.consume(&b), c.consume(&a)), (Some("b"), Some("a")));
    }

    #[test]
    fn tokens_expire() {
        let mut c = RequestCache::default();
        let now = Instant::now();
        let t = c.insert_at(1, now).unwrap();
        assert_eq!(
            c.consume_at(&t, now + TOKEN_TTL),
            None,
            "expired at the TTL"
        );
        assert!(c.is_empty(), "an expired token is gone too");
        let t = c.insert_at(2, now).unwrap();
        assert_eq!(
            c.consume_at(&t, now + TOKEN_TTL - Duration::from_millis(1)),
            Some(2)
        );
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut c = RequestCache::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        let first = c.insert_at("a", now).unwrap();
        c.insert_at("b", now + Duration::from_secs(10)).unwrap();
        c.insert_at("c", now + Duration::from_secs(20)).unwrap();
        assert_eq!(
            c.insert_at("d", now + Duration::from_secs(30)),
            Err(CacheError::Full(3))
        );
        assert!(CacheError::Full(3).to_string().contains("too many"));
        // Once the first expired, its slot is swept and reused.
        let d = c.insert_at("d", now + Duration::from_secs(61)).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.consume_at(&first, now), None);
        assert_eq!(c.consume_at(&d, now + Duration::from_secs(62)), Some("d"));
        // A consumed token frees its slot at once.
        c.insert_at("e", now + Duration::from_secs(62)).unwrap();
    }
}
