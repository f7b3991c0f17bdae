//! The agent's OOM watchdog: systemd-oomd's rule for one pod VM.
//!
//! Without swap, the kernel's memcg OOM killer only fires once reclaim stops making progress.
//! A container at its memory limit whose program text lives in the page cache (every
//! container here: its image is a block device) keeps "making progress": reclaim evicts a
//! text page, the next instruction faults it back in, and the task thrashes at its limit for
//! minutes instead of being killed. The same holds for the whole guest at its RAM size.
//!
//! Pressure stall information measures exactly that state. The watchdog arms a PSI trigger
//! (`full` stall of [`STALL`] within [`WINDOW`]) on each container cgroup's `memory.pressure`
//! and on `/proc/pressure/memory`; when the trigger fires on consecutive windows while the
//! cgroup keeps hitting its limit (or the guest is nearly out of memory), the container is
//! killed as a whole, as a kernel OOM kill with `memory.oom.group` would, and is reported
//! as `OOMKilled` like any kernel OOM kill.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Stall time (all tasks of the group waiting on memory) that fires a trigger...
pub const STALL: Duration = Duration::from_millis(1000);
/// ...within this window (PSI allows 500 ms to 10 s).
pub const WINDOW: Duration = Duration::from_secs(2);
/// Consecutive fired windows, each at the limit, before the watchdog kills.
pub const STRIKES: u32 = 2;
/// The guest as a whole counts as out of memory below this share of MemTotal available.
pub const GUEST_AVAILABLE_PERCENT: u64 = 5;

/// Errors arming or waiting on a pressure trigger.
#[derive(Debug, thiserror::Error)]
pub enum OomdError {
    /// The pressure file could not be opened or the trigger written.
    #[error("arming a PSI trigger on {path}")]
    Arm {
        /// The pressure file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting on the trigger failed.
    #[error("waiting on the PSI trigger of {path}")]
    Wait {
        /// The pressure file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A PSI trigger: readable with priority each time the stall threshold is crossed in a window.
pub struct PressureTrigger {
    path: PathBuf,
    fd: AsyncFd<File>,
}

impl PressureTrigger {
    /// Arms `full <stall> <window>` on a pressure file (`memory.pressure` of a cgroup, or
    /// `/proc/pressure/memory`). The trigger lives as long as this value.
    pub fn arm(path: &Path, stall: Duration, window: Duration) -> Result<Self, OomdError> {
        let arm_err = |source| OomdError::Arm {
            path: path.to_path_buf(),
            source,
        };
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(arm_err)?;
        let spec = format!("full {} {}\0", stall.as_micros(), window.as_micros());
        f.write_all(spec.as_bytes()).map_err(arm_err)?;
        let fd = crate::sys::asyncfd::register(f, Interest::PRIORITY).map_err(arm_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Waits until the trigger fires next.
    pub async fn fired(&self) -> Result<(), OomdError> {
        let mut guard =
            self.fd
                .ready(Interest::PRIORITY)
                .await
                .map_err(|source| OomdError::Wait {
                    path: self.path.clone(),
                    source,
                })?;
        guard.clear_ready();
        Ok(())
    }
}

/// Counts consecutive fired windows in which the group was at its limit.
#[derive(Debug, Default)]
pub struct Strikes {
    count: u32,
    last: Option<Instant>,
}

impl Strikes {
    /// Records a fired trigger at `now`; `at_limit` says whether the group hit its limit
    /// since the previous event. Returns true when the group should be killed.
    pub fn fired(&mut self, now: Instant, at_limit: bool) -> bool {
        // Triggers fire at most once per window; a gap of more than two windows means the
        // pressure let up in between.
        let consecutive = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) <= WINDOW * 2 + WINDOW / 2);
        self.last = Some(now);
        if !at_limit {
            self.count = 0;
            return false;
        }
        self.count = if consecutive { self.count + 1 } else { 1 };
        if self.count >= STRIKES {
            self.count = 0;
            self.last = None;
            return true;
        }
        false
    }
}

/// Whether `/proc/meminfo` text says the guest is nearly out of memory.
pub fn guest_out_of_memory(meminfo: &str) -> bool {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    match (kib("MemTotal"), kib("MemAvailable")) {
        (Some(total), Some(avail)) => avail * 100 < total * GUEST_AVAILABLE_PERCENT,
        _ => false,
    }
}

/// The victim among `(container, its processes' highest oom_score)`: the highest score, as
/// the kernel's OOM killer would choose (oom_score already includes `oom_score_adj`).
pub fn pick_victim<T: Clone>(candidates: &[(T, u64)]) -> Option<T> {
    candidates
        .iter()
        .max_by_key(|(_, score)| *score)
        .map(|(c, _)| c.clone())
}

/// The highest `/proc/<pid>/oom_score` among `pids` (0 when none can be read).
pub fn highest_oom_score(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/oom_score"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_need_consecutive_windows_at_the_limit() {
        let t0 = Instant::now();
        let mut s = Strikes::default();
        assert!(!s.fired(t0, true), "one window is not enough");
        assert!(s.fired(t0 + WINDOW, true), "the next window kills");
        // After a kill the count starts over.
        assert!(!s.fired(t0 + WINDOW * 2, true));
        // Pressure without hitting the limit resets.
        let mut s = Strikes::default();
        assert!(!s.fired(t0, true));
        assert!(!s.fired(t0 + WINDOW, false));
        assert!(!s.fired(t0 + WINDOW * 2, true));
        assert!(s.fired(t0 + WINDOW * 3, true));
        // A quiet gap in between resets too.
        let mut s = Strikes::default();
        assert!(!s.fired(t0, true));
        assert!(!s.fired(t0 + WINDOW * 10, true));
        assert!(s.fired(t0 + WINDOW * 11, true));
    }

    #[test]
    fn guest_out_of_memory_reads_meminfo() {
        let low = "MemTotal:         200000 kB\nMemFree:    1000 kB\nMemAvailable:       9000 kB\n";
        let fine = "MemTotal:         200000 kB\nMemAvailable:      90000 kB\n";
        assert!(guest_out_of_memory(low));
        assert!(!guest_out_of_memory(fine));
        assert!(!guest_out_of_memory("garbage"));
    }

    #[test]
    fn victim_is_the_highest_score() {
        assert_eq!(pick_victim(&[("a", 10), ("b", 900), ("c", 300)]), Some("b"));
        assert_eq!(pick_victim::<&str>(&[]), None);
    }

    #[tokio::test]
    async fn arming_a_missing_pressure_file_names_it() {
        let e = PressureTrigger::arm(Path::new("/nonexistent/memory.pressure"), STALL, WINDOW)
            .err()
            .expect("no such file");
        assert!(
            e.to_string().contains("/nonexistent/memory.pressure"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn arms_a_real_trigger_on_the_system_pressure_file() {
        let path = Path::new("/proc/pressure/memory");
        if !path.exists() {
            eprintln!("this kernel has no PSI; the guest kernel does");
            return;
        }
        let t = PressureTrigger::arm(path, STALL, WINDOW).expect("armed as root");
        // A healthy machine does not stall for a second: the trigger stays quiet.
        let quiet = tokio::time::timeout(Duration::from_millis(300), t.fired()).await;
        assert!(quiet.is_err(), "fired without pressure");
        // The kernel checks the spec: a window below 500 ms is refused.
        let e = PressureTrigger::arm(path, Duration::from_millis(100), Duration::from_millis(200))
            .err()
            .expect("window too small");
        assert!(e.to_string().contains("/proc/pressure/memory"), "{e}");
    }
}
