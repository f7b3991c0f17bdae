//! Supervision: each component runs alone and is restarted alone, with exponential back-off
//! (1 s doubling to 60 s, reset after it ran 60 s), and every exit is logged. The others keep
//! running.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;

/// First restart delay.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long resets the delay.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The delay before restart number `n` after a run of `ran`.
pub fn next_delay(current: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_AFTER {
        BACKOFF_START
    } else {
        (current * 2).min(BACKOFF_MAX)
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs `make()` until `stop` turns true, restarting it after it ends.
pub async fn task<F, Fut, E>(name: &'static str, mut stop: watch::Receiver<bool>, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut delay = BACKOFF_START / 2;
    loop {
        let t = Instant::now();
        tokio::select! {
            r = make() => match r {
                Ok(()) => tracing::warn!("{name} ended; restarting"),
                Err(e) => tracing::error!("{name} failed: {e}; restarting"),
            },
            _ = stopped(&mut stop) => return,
        }
        delay = next_delay(delay, t.elapsed());
        tracing::info!("{name}: restart in {delay:?}");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// A child process to keep running.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Name in logs.
    pub name: &'static str,
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Its stdout and stderr go here (appended).
    pub log: PathBuf,
}

/// The network namespace `kennel` started in, kept open after it entered `--netns`.
static HOST_NETNS: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Remembers the original network namespace: children run there (through `nsenter`), so a
/// runtime that places only its VMs in the node namespace keeps reaching host-side registries.
pub fn set_host_netns(f: std::fs::File) {
    let _ = HOST_NETNS.set(f);
}

fn spawn(spec: &ChildSpec) -> std::io::Result<Child> {
    use std::os::fd::AsRawFd;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = match HOST_NETNS.get() {
        Some(f) => {
            let mut c = Command::new("nsenter");
            c.arg(format!(
                "--net=/proc/{}/fd/{}",
                std::process::id(),
                f.as_raw_fd()
            ))
            .arg("--")
            .arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at the terminal reaches `kennel up`, which stops the
        // child itself (SIGTERM, so the runtime leaves pod VMs running for the next start).
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

fn pid_file(spec: &ChildSpec) -> PathBuf {
    spec.log.with_extension("pid")
}

/// Stops a copy of `spec` left running by an earlier `kennel up` that was killed (it is not our
/// child, so it cannot be adopted): two runtimes must never share one state directory.
async fn stop_leftover(spec: &ChildSpec) {
    let Ok(text) = std::fs::read_to_string(pid_file(spec)) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let same_args = spec
        .args
        .iter()
        .all(|a| cmdline.split('\0').any(|w| w == a));
    if spec.args.is_empty() || !same_args {
        return;
    }
    tracing::warn!(
        "{}: stopping the copy left by an earlier run (pid {pid})",
        spec.name
    );
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
}

/// Keeps `spec` running until `stop`; then SIGTERMs it and waits up to 10 s (then SIGKILL).
/// A copy left running by an earlier, killed `kennel up` is stopped first.
pub async fn child(spec: ChildSpec, mut stop: watch::Receiver<bool>) {
    stop_leftover(&spec).await;
    let mut delay = BACKOFF_START / 2;
    loop {
        let t = Instant::now();
        let mut c = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "{}: cannot start {}: {e}",
                    spec.name,
                    spec.program.display()
                );
                delay = next_delay(delay, Duration::ZERO);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        tracing::info!(
            "{} started (pid {:?}, log {})",
            spec.name,
            c.id(),
            spec.log.display()
        );
        if let Some(pid) = c.id() {
            let _ = std::fs::write(pid_file(&spec), pid.to_string());
        }
        tokio::select! {
            r = c.wait() => {
                tracing::error!("{} exited ({}); see {}", spec.name, r.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()), spec.log.display());
            }
            _ = stopped(&mut stop) => {
                terminate(&mut c, spec.name).await;
                return;
            }
        }
        delay = next_delay(delay, t.elapsed());
        tracing::info!("{}: restart in {delay:?}", spec.name);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

async fn terminate(c: &mut Child, name: &str) {
    if let Some(pid) = c.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .is_err()
    {
        tracing::warn!("{name} did not stop within 10 s; killing it");
        let _ = c.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_to_cap_and_resets_after_a_healthy_run() {
        let mut d = BACKOFF_START / 2;
        let mut seen = vec![];
        for _ in 0..9 {
            d = next_delay(d, Duration::from_secs(1));
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(next_delay(d, HEALTHY_AFTER), BACKOFF_START);
    }

    #[tokio::test]
    async fn a_failing_task_is_restarted_and_stops_on_request() {
        let (tx, rx) = watch::channel(false);
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let r = runs.clone();
        let h = tokio::spawn(task("t", rx, move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err::<(), _>("boom")
            }
        }));
        tokio::time::sleep(Duration::from_millis(1700)).await;
        tx.send(true).unwrap();
        h.await.unwrap();
        // runs at 0 s, 0.5 s... first delay is 1 s: 0 s and 1 s.
        assert!(runs.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }
}
