//! Ending containers: StopContainer (SIGTERM, the grace period, SIGKILL, the exit) and the kill
//! RemoveContainer and StopPodSandbox use, each bounded in time whatever the guest does, and the
//! one place an exit is recorded.
//!
//! StopContainer returns within its `timeout` plus [`KILL_GRACE`]: the SIGTERM (agent connection
//! included) and the wait for the exit share the `timeout`; then SIGKILL goes to every process of
//! the container and the init's exit is taken straight from the agent's WaitProcess — not from the
//! container's watcher, which also waits for the output streams to drain into the log. An exit
//! the agent does not confirm within [`KILL_GRACE`] (VM gone or unresponsive) is recorded as a
//! kill (137) with the reason in the message.

use crate::runtime::{agent_error, CriError, Runtime};
use crate::state::{now_ns, ContainerRecord, ContainerState};
use agent_proto::pb;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// After the SIGKILL, how long the agent has to report the container's exit.
pub const KILL_GRACE: Duration = Duration::from_secs(10);
/// How often the recorded state is looked at while waiting for an exit.
const POLL: Duration = Duration::from_millis(50);

/// Reason and message of a container that exited as `w` says.
pub fn exit_reason(w: &pb::WaitProcessResponse) -> (&'static str, String) {
    if w.oom_killed {
        (
            "OOMKilled",
            "the container's memory limit was exceeded".to_string(),
        )
    } else if w.exit_code == 0 {
        ("Completed", String::new())
    } else if w.signal != 0 {
        ("Error", format!("killed by signal {}", w.signal))
    } else {
        ("Error", String::new())
    }
}

impl Runtime {
    /// StopContainer: SIGTERM (the image's stop signal is not consulted), SIGKILL once `timeout`
    /// seconds have passed, then the exit. Stopping a stopped or unknown container is fine (the
    /// CRI makes the call idempotent).
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout: i64) -> Result<(), CriError> {
        let Some(c) = self.state.container(id)? else {
            return Ok(());
        };
        match c.state {
            ContainerState::Exited | ContainerState::Unknown => return Ok(()),
            ContainerState::Created => {
                self.state.update_container(&c.id, |r| {
                    r.state = ContainerState::Exited;
                    r.finished_at = now_ns();
                    r.reason = "Error".into();
                    r.message = "stopped before it started".into();
                })?;
                return Ok(());
            }
            ContainerState::Running => {}
        }
        let t0 = Instant::now();
        if timeout > 0 {
            let deadline = t0 + Duration::from_secs(timeout as u64);
            let term = self.signal_container(&c, libc::SIGTERM, false);
            match tokio::time::timeout_at(deadline, term).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("container {}: SIGTERM: {e}", c.id),
                Err(_) => tracing::debug!("container {}: SIGTERM not delivered in time", c.id),
            }
            if self.exited_by(&c.id, deadline).await {
                tracing::debug!(
                    "container {}: exited {:?} after SIGTERM",
                    c.id,
                    t0.elapsed()
                );
                return Ok(());
            }
        }
        let r = self.kill_container(&c.id).await;
        tracing::debug!("container {}: stopped in {:?}", c.id, t0.elapsed());
        r
    }

    /// SIGKILLs every process of a running container and records its exit: the agent's, or a
    /// kill (137) when the agent does not report one within [`KILL_GRACE`].
    pub(crate) async fn kill_container(&self, id: &str) -> Result<(), CriError> {
        let Some(c) = self.state.container(id)? else {
            return Ok(());
        };
        let deadline = Instant::now() + KILL_GRACE;
        let killed = async {
            self.signal_container(&c, libc::SIGKILL, true).await?;
            let mut agent = self.agent(&c.sandbox_id).await?;
            let w = agent
                .wait_process(pb::ProcessRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                })
                .await
                .map_err(|s| agent_error("WaitProcess", s))?;
            Ok::<_, CriError>(w.into_inner())
        };
        let why = match tokio::time::timeout_at(deadline, killed).await {
            Ok(Ok(w)) => return self.record_exit(&c.id, &w),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("the agent did not report the exit within {KILL_GRACE:?}"),
        };
        // The sandbox's watcher may have seen the VM go (and marked its containers) meanwhile.
        if self.exited_by(&c.id, deadline).await {
            return Ok(());
        }
        tracing::warn!("container {}: recorded as killed: {why}", c.id);
        self.state.update_container(&c.id, |r| {
            if r.state == ContainerState::Running {
                r.state = ContainerState::Exited;
                r.finished_at = now_ns();
                r.exit_code = 137;
                r.reason = "Error".into();
                r.message = format!("killed ({why})");
            }
        })?;
        Ok(())
    }

    /// Records that a running container exited as `w` says (no-op once it is recorded).
    pub(crate) fn record_exit(
        &self,
        id: &str,
        w: &pb::WaitProcessResponse,
    ) -> Result<(), CriError> {
        let (reason, message) = exit_reason(w);
        self.state.update_container(id, |r| {
            if r.state == ContainerState::Running {
                r.state = ContainerState::Exited;
                r.finished_at = now_ns();
                r.exit_code = w.exit_code;
                r.reason = reason.into();
                r.message = message;
            }
        })?;
        Ok(())
    }

    /// Sends `signal` to a container's init, or to all its processes.
    async fn signal_container(
        &self,
        c: &ContainerRecord,
        signal: i32,
        all: bool,
    ) -> Result<(), CriError> {
        let mut agent = self.agent(&c.sandbox_id).await?;
        agent
            .signal_process(pb::SignalProcessRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
                signal,
                all,
            })
            .await
            .map_err(|s| agent_error("SignalProcess", s))?;
        Ok(())
    }

    /// Waits until the container is no longer recorded as running, or `deadline`.
    async fn exited_by(&self, id: &str, deadline: Instant) -> bool {
        loop {
            match self.state.container(id) {
                Ok(Some(c)) if c.state == ContainerState::Running => {}
                _ => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_exit() {
        let w = |exit_code, signal, oom_killed| pb::WaitProcessResponse {
            exit_code,
            signal,
            oom_killed,
        };
        assert_eq!(exit_reason(&w(0, 0, false)).0, "Completed");
        assert_eq!(exit_reason(&w(137, 9, true)).0, "OOMKilled");
        assert_eq!(
            exit_reason(&w(137, 9, false)),
            ("Error", "killed by signal 9".to_string())
        );
        assert_eq!(exit_reason(&w(3, 0, false)), ("Error", String::new()));
    }
}
