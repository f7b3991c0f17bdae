//! Child reaping: one task collects every child exit (`waitpid(-1)` on SIGCHLD), hands the
//! status to whoever registered for that pid, and keeps unclaimed statuses for a while so a
//! process that exits before it is registered is not lost. Orphans reparented to PID 1 are
//! reaped the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Errors starting the reaper.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// SIGCHLD handler could not be installed.
    #[error("installing the SIGCHLD handler")]
    Signal(#[source] std::io::Error),
}

const UNCLAIMED_MAX: usize = 4096;

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, watch::Sender<Option<Exit>>>,
    unclaimed: HashMap<i32, Exit>,
    order: VecDeque<i32>,
}

/// Handle to the reaper; cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping task on the current runtime.
    pub fn start() -> Result<Self, ReaperError> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Returns a receiver that becomes `Some(exit)` when `pid` ends.
    pub fn watch(&self, pid: i32) -> watch::Receiver<Option<Exit>> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(exit) = t.unclaimed.remove(&pid) {
            t.order.retain(|p| *p != pid);
            return watch::channel(Some(exit)).1;
        }
        if let Some(tx) = t.waiters.get(&pid) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        t.waiters.insert(pid, tx);
        rx
    }

    /// Collects every exited child without blocking.
    pub fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid.as_raw(), Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.deliver(pid.as_raw(), Exit::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = t.waiters.remove(&pid) {
            let _ = tx.send(Some(exit));
            return;
        }
        tracing::debug!(pid, ?exit, "reaped unclaimed child");
        if t.unclaimed.len() >= UNCLAIMED_MAX {
            if let Some(old) = t.order.pop_front() {
                t.unclaimed.remove(&old);
            }
        }
        t.unclaimed.insert(pid, exit);
        t.order.push_back(pid);
    }
}

/// Waits until the watched process ends.
pub async fn wait(mut rx: watch::Receiver<Option<Exit>>) -> Exit {
    loop {
        if let Some(exit) = *rx.borrow_and_update() {
            return exit;
        }
        if rx.changed().await.is_err() {
            // The reaper is gone (agent shutting down); report a kill.
            return Exit::Signal(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unclaimed_status_is_kept_for_late_watchers() {
        let r = Reaper::default();
        r.deliver(42, Exit::Code(3));
        assert_eq!(*r.watch(42).borrow(), Some(Exit::Code(3)));
        let rx = r.watch(43);
        r.deliver(43, Exit::Signal(9));
        assert_eq!(*rx.borrow(), Some(Exit::Signal(9)));
    }

    #[test]
    fn unclaimed_table_is_bounded() {
        let r = Reaper::default();
        for pid in 0..(UNCLAIMED_MAX as i32 + 10) {
            r.deliver(pid, Exit::Code(0));
        }
        let t = r.table.lock().unwrap();
        assert_eq!(t.unclaimed.len(), UNCLAIMED_MAX);
        assert!(!t.unclaimed.contains_key(&0));
    }
}
