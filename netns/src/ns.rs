//! Running work inside a network namespace.
//!
//! Every netlink socket, tap, sysctl write and `nft` child process belongs to
//! the network namespace of the thread that creates it. [`NetNs::run`] spawns
//! a short-lived thread, moves it into the namespace and runs a closure there,
//! so the caller's own threads never change namespace.
#![forbid(unsafe_code)]

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};

use crate::sys;

/// Directory where `ip netns add` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors entering a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The namespace file could not be opened (not created, or deleted).
    #[error("open network namespace {path}")]
    Open {
        /// Path of the namespace file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `setns` refused the namespace file.
    #[error("enter network namespace {path}")]
    Enter {
        /// Path of the namespace file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The worker thread or its async runtime could not be started.
    #[error("start namespace worker")]
    Worker(#[source] std::io::Error),
}

/// A network namespace to run work in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNs {
    /// The namespace of the calling process (the host's, in production).
    Current,
    /// A namespace file, such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl NetNs {
    /// The calling process's own network namespace.
    pub fn current() -> Self {
        NetNs::Current
    }

    /// A namespace created with `ip netns add NAME`.
    pub fn named(name: &str) -> Self {
        NetNs::Path(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// A namespace given by the path of its namespace file.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        NetNs::Path(path.into())
    }

    fn open(&self) -> Result<Option<(PathBuf, File)>, NsError> {
        match self {
            NetNs::Current => Ok(None),
            NetNs::Path(p) => File::open(p)
                .map(|f| Some((p.clone(), f)))
                .map_err(|source| NsError::Open {
                    path: p.clone(),
                    source,
                }),
        }
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and
    /// returns its result. Sockets and devices that `f` creates belong to the
    /// namespace and may be used from any thread afterwards. A panic in `f`
    /// is propagated to the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T, NsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let opened = self.open()?;
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("netns-worker".into())
                .spawn_scoped(s, move || {
                    if let Some((path, file)) = opened {
                        sys::setns_net(&file).map_err(|source| NsError::Enter { path, source })?;
                    }
                    Ok(f())
                })
                .map_err(NsError::Worker)?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Like [`NetNs::run`], for async work: `f` builds a future that is driven
    /// to completion on a single-threaded tokio runtime inside the namespace.
    /// Safe to call from within another tokio runtime.
    pub fn run_async<F, Fut, T>(&self, f: F) -> Result<T, NsError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(NsError::Worker)?;
            Ok(rt.block_on(f()))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let err = NetNs::named("kennel-no-such-ns-xyz")
            .run(|| ())
            .unwrap_err();
        assert!(matches!(err, NsError::Open { .. }), "{err}");
        assert!(err.to_string().contains("kennel-no-such-ns-xyz"));
    }

    #[test]
    fn current_runs_closure() {
        assert_eq!(NetNs::current().run(|| 41 + 1).unwrap(), 42);
        assert_eq!(NetNs::current().run_async(|| async { 7 }).unwrap(), 7);
    }
}
