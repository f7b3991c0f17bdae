//! The attach session: the init process of a running container. Its output comes from the log
//! pumps' fan-out ([`crate::fanout`]: what the container writes after the attach), its stdin
//! goes to the agent (`WriteStdin` with exec id ""; with `stdin_once` the attach's stdin EOF
//! closes the container's stdin), a tty is resized with `ResizeTty`. The session ends when the
//! container exits (its exit code); a client going away only detaches.

use super::exec::{resize_tty, Waiter};
use super::stdio::{stdin_writer, ChunkReader};
use crate::logs::LogStream;
use crate::runtime::Runtime;
use crate::state::ContainerState;
use agent_proto::AgentClient;
use kennel_stream::{ExecIo, ExecOptions, ExecSession, TerminalSize};
use std::io;
use std::sync::Arc;

/// An attach to a container's init, as a kennel-stream session.
pub struct AgentAttach {
    rt: Arc<Runtime>,
    agent: AgentClient,
    container_id: String,
    opts: ExecOptions,
    stdin_once: bool,
    waiter: Option<Waiter>,
}

impl AgentAttach {
    /// A session attaching to container `container_id` through `agent`.
    pub fn new(
        rt: Arc<Runtime>,
        agent: AgentClient,
        container_id: String,
        opts: ExecOptions,
        stdin_once: bool,
    ) -> Self {
        Self {
            rt,
            agent,
            container_id,
            opts,
            stdin_once,
            waiter: None,
        }
    }
}

impl ExecSession for AgentAttach {
    async fn start(&mut self, size: Option<TerminalSize>) -> io::Result<ExecIo> {
        let id = self.container_id.clone();
        // Subscribe first, then check it still runs: output between the two is not lost, and
        // a container that exited since the Attach call is refused.
        let stdout = self
            .opts
            .stdout
            .then(|| self.rt.fanout.subscribe(&id, LogStream::Stdout));
        let stderr = (self.opts.stderr && !self.opts.tty)
            .then(|| self.rt.fanout.subscribe(&id, LogStream::Stderr));
        let c = self
            .rt
            .container_rec(&id)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if c.state != ContainerState::Running {
            return Err(io::Error::other(format!(
                "container {id} is not running (state {:?})",
                c.state
            )));
        }
        self.waiter = Some(Waiter::start(self.agent.clone(), id.clone(), String::new()));
        if let (true, Some(size)) = (self.opts.tty, size) {
            resize_tty(&mut self.agent, &id, "", size).await;
        }
        tracing::debug!("container {id}: attached ({:?})", self.opts);
        Ok(ExecIo {
            stdin: self.opts.stdin.then(|| {
                stdin_writer(
                    self.agent.clone(),
                    id.clone(),
                    String::new(),
                    self.stdin_once,
                )
            }),
            stdout: stdout.map(ChunkReader::subscription),
            stderr: stderr.map(ChunkReader::subscription),
        })
    }

    async fn resize(&mut self, size: TerminalSize) {
        resize_tty(&mut self.agent, &self.container_id, "", size).await;
    }

    async fn wait(&mut self) -> io::Result<i32> {
        match self.waiter.as_mut() {
            Some(w) => w.wait().await,
            None => std::future::pending().await,
        }
    }

    async fn terminate(&mut self) {
        // Detach only: the container keeps running.
        tracing::debug!(
            "container {}: attach client gone, detached",
            self.container_id
        );
    }
}
