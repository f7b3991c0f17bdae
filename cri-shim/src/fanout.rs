//! Fan-out of container output to attach sessions. A container's init stdout and stderr are read
//! once, by the log pumps (`Runtime::attach_output`), which write everything to the CRI log file
//! and offer each chunk here to every attach session subscribed to that stream. A subscriber
//! receives what was produced after it subscribed; a subscriber too slow to keep up loses chunks
//! (the log pump never waits for an attach client), and it sees its stream end when the pump
//! ends (the container closed the stream, i.e. it exited).

use crate::logs::LogStream;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Chunks queued per subscriber before further chunks are dropped for it.
pub const SUBSCRIBER_QUEUE: usize = 256;

#[derive(Default)]
struct Entry {
    subscribers: Vec<mpsc::Sender<Bytes>>,
    /// The pump of this stream ended: new subscribers get an ended stream.
    ended: bool,
}

/// Subscribers per (container, stream).
#[derive(Default)]
pub struct Fanout {
    entries: Mutex<HashMap<(String, LogStream), Entry>>,
}

impl Fanout {
    /// An empty fan-out.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, LogStream), Entry>) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut entries)
    }

    /// A pump starts reading `stream` of container `id` (at start, or after a restart).
    pub fn open(&self, id: &str, stream: LogStream) {
        self.with(|e| e.entry((id.to_string(), stream)).or_default().ended = false);
    }

    /// Subscribes to what `stream` of container `id` produces from now on. The receiver ends
    /// when the stream ends (at once if it already has).
    pub fn subscribe(&self, id: &str, stream: LogStream) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.with(|e| {
            let entry = e.entry((id.to_string(), stream)).or_default();
            if !entry.ended {
                entry.subscribers.push(tx);
            }
        });
        rx
    }

    /// Offers a chunk to every subscriber; gone subscribers are dropped, full ones miss it.
    pub fn publish(&self, id: &str, stream: LogStream, data: &Bytes) {
        self.with(|e| {
            let Some(entry) = e.get_mut(&(id.to_string(), stream)) else {
                return;
            };
            entry.subscribers.retain(|tx| match tx.try_send(data.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        "container {id}: an attach client is too slow for its {stream}: {} bytes dropped for it",
                        data.len()
                    );
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        });
    }

    /// The pump of `stream` ended: every subscriber's stream ends.
    pub fn end(&self, id: &str, stream: LogStream) {
        self.with(|e| {
            let entry = e.entry((id.to_string(), stream)).or_default();
            entry.subscribers.clear();
            entry.ended = true;
        });
    }

    /// Forgets a removed container.
    pub fn forget(&self, id: &str) {
        self.with(|e| e.retain(|(c, _), _| c != id));
    }

    /// Subscribers of a stream (tests, diagnostics).
    pub fn subscribers(&self, id: &str, stream: LogStream) -> usize {
        self.with(|e| {
            e.get(&(id.to_string(), stream))
                .map_or(0, |x| x.subscribers.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_what_follows_and_see_the_end() {
        let f = Fanout::new();
        f.open("c", LogStream::Stdout);
        f.publish("c", LogStream::Stdout, &Bytes::from_static(b"before"));
        let mut a = f.subscribe("c", LogStream::Stdout);
        let mut b = f.subscribe("c", LogStream::Stdout);
        let mut err = f.subscribe("c", LogStream::Stderr);
        f.publish("c", LogStream::Stdout, &Bytes::from_static(b"one"));
        assert_eq!(a.recv().await.unwrap(), "one");
        assert_eq!(b.recv().await.unwrap(), "one");
        drop(b);
        f.publish("c", LogStream::Stdout, &Bytes::from_static(b"two"));
        assert_eq!(
            f.subscribers("c", LogStream::Stdout),
            1,
            "a gone one is dropped"
        );
        f.end("c", LogStream::Stdout);
        assert_eq!(a.recv().await.unwrap(), "two");
        assert!(a.recv().await.is_none(), "ends with the pump");
        assert!(f.subscribe("c", LogStream::Stdout).recv().await.is_none());
        f.open("c", LogStream::Stdout);
        assert_eq!(f.subscribers("c", LogStream::Stderr), 1);
        f.forget("c");
        assert!(err.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_slow_subscriber_misses_chunks_without_blocking() {
        let f = Fanout::new();
        f.open("c", LogStream::Stderr);
        let mut rx = f.subscribe("c", LogStream::Stderr);
        for i in 0..SUBSCRIBER_QUEUE + 10 {
            f.publish("c", LogStream::Stderr, &Bytes::from(i.to_string()));
        }
        for i in 0..SUBSCRIBER_QUEUE {
            assert_eq!(rx.recv().await.unwrap(), i.to_string());
        }
        f.publish("c", LogStream::Stderr, &Bytes::from_static(b"later"));
        assert_eq!(rx.recv().await.unwrap(), "later");
    }
}
