//! Timeouts and bounds of a streaming connection, and the idle timer that enforces the first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The bounds every connection runs under. `Limits::default()` follows containerd and kubelet.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection with no frame or message either way for this long is closed and its session
    /// terminated (containerd's `stream_idle_timeout`, 4 h).
    pub idle_timeout: Duration,
    /// How long a SPDY client may take to open the streams an exec needs, or the second stream
    /// of a port-forward pair (kubelet's `streamCreationTimeout`, 30 s).
    pub stream_creation_timeout: Duration,
    /// With a tty, how long to wait for the client's first terminal size before starting the
    /// process anyway (kubectl sends it right after connecting).
    pub initial_resize_wait: Duration,
    /// After the process ended, how long to keep copying its stdout and stderr before the exit
    /// status is sent (a child it left behind may hold the pipes open).
    pub output_drain_timeout: Duration,
    /// After the last frame is sent, how long to wait for the client to close its side.
    pub linger: Duration,
    /// The largest frame (SPDY) or message (WebSocket) accepted from a client, in bytes.
    pub max_frame_len: usize,
    /// Frames queued per stream towards the backend before the connection's reader waits.
    pub stream_queue: usize,
    /// Streams one SPDY connection may have open at once.
    pub max_streams: usize,
    /// Port-forward connections (stream pairs or WebSocket ports) open at once per connection.
    pub max_port_forwards: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(4 * 3600),
            stream_creation_timeout: Duration::from_secs(30),
            initial_resize_wait: Duration::from_secs(2),
            output_drain_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            max_frame_len: 1 << 20,
            stream_queue: 8,
            max_streams: 1024,
            max_port_forwards: 256,
        }
    }
}

/// Tracks the last activity of a connection; `expired` resolves once it was idle for the timeout.
#[derive(Debug)]
pub struct IdleTimer {
    start: Instant,
    last_ms: AtomicU64,
    timeout: Duration,
}

impl IdleTimer {
    /// A timer that starts now.
    pub fn new(timeout: Duration) -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            timeout,
        }
    }

    /// Records activity.
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves when no activity was recorded for the timeout.
    pub async fn expired(&self) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + self.timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
