//! The exec session: a new process in a running container, run by the guest agent
//! (`ExecProcess` with the container's environment, user and working directory, a pty when the
//! client asked for a tty), its stdio through the agent's stream RPCs, resized with `ResizeTty`,
//! waited with `WaitProcess` and killed with `SignalProcess` when the client goes away.

use super::stdio::{drain, stdin_writer, ChunkReader};
use crate::oci;
use crate::runtime::Runtime;
use crate::state::new_id;
use agent_proto::{pb, AgentClient};
use kennel_stream::{ExecIo, ExecOptions, ExecSession, TerminalSize};
use std::io;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A tonic status as an I/O error naming the agent call (kennel-stream sends it to the client).
pub fn rpc_error(what: &str, s: &tonic::Status) -> io::Error {
    io::Error::other(format!("agent {what}: {}", s.message()))
}

/// `WaitProcess` of one process, started once and polled cancel-safely.
pub struct Waiter {
    handle: Option<JoinHandle<io::Result<i32>>>,
    exit: Option<i32>,
}

impl Waiter {
    /// Starts waiting for process `exec_id` ("" = the init) of a container.
    pub fn start(mut agent: AgentClient, container_id: String, exec_id: String) -> Self {
        let handle = tokio::spawn(async move {
            let w = agent
                .wait_process(pb::ProcessRequest {
                    container_id,
                    exec_id,
                })
                .await
                .map_err(|s| rpc_error("WaitProcess", &s))?
                .into_inner();
            // The agent reports a signal death as 128 + the signal, as ExecSync does.
            Ok(w.exit_code)
        });
        Self {
            handle: Some(handle),
            exit: None,
        }
    }

    /// The exit code, once the process ended. Cancel-safe: the wait itself runs in a task.
    pub async fn wait(&mut self) -> io::Result<i32> {
        if let Some(code) = self.exit {
            return Ok(code);
        }
        let Some(handle) = self.handle.as_mut() else {
            return std::future::pending().await;
        };
        let r = handle
            .await
            .map_err(|e| io::Error::other(format!("waiting for the process: {e}")));
        self.handle = None;
        let code = r??;
        self.exit = Some(code);
        Ok(code)
    }

    /// True once the process is known to have ended.
    pub fn exited(&self) -> bool {
        self.exit.is_some() || self.handle.as_ref().is_some_and(|h| h.is_finished())
    }
}

/// Resizes the terminal of process `exec_id` ("" = the init); failures are logged.
pub async fn resize_tty(
    agent: &mut AgentClient,
    container_id: &str,
    exec_id: &str,
    size: TerminalSize,
) {
    let req = pb::ResizeTtyRequest {
        container_id: container_id.to_string(),
        exec_id: exec_id.to_string(),
        rows: u32::from(size.height),
        cols: u32::from(size.width),
    };
    if let Err(s) = agent.resize_tty(req).await {
        tracing::debug!(
            "container {container_id} exec {exec_id:?}: resize: {}",
            s.message()
        );
    }
}

/// An exec in a container, as a kennel-stream session.
pub struct AgentExec {
    rt: Arc<Runtime>,
    agent: AgentClient,
    container_id: String,
    exec_id: String,
    opts: ExecOptions,
    waiter: Option<Waiter>,
}

impl AgentExec {
    /// A session for `opts.command` in container `container_id`, through `agent`.
    pub fn new(
        rt: Arc<Runtime>,
        agent: AgentClient,
        container_id: String,
        opts: ExecOptions,
    ) -> Self {
        Self {
            rt,
            agent,
            container_id,
            exec_id: new_id()[..16].to_string(),
            opts,
            waiter: None,
        }
    }

    fn request(&self) -> pb::ProcessRequest {
        pb::ProcessRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        }
    }
}

impl ExecSession for AgentExec {
    async fn start(&mut self, size: Option<TerminalSize>) -> io::Result<ExecIo> {
        let c = self
            .rt
            .container_rec(&self.container_id)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let spec = self.rt.spec_of(&c).await;
        let process = oci::exec_process(&self.opts.command, spec.as_ref(), self.opts.tty);
        let process = serde_json::to_vec(&process).map_err(io::Error::other)?;
        self.agent
            .exec_process(pb::ExecProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                oci_process_json: process,
            })
            .await
            .map_err(|s| rpc_error("ExecProcess", &s))?;
        tracing::debug!(
            "container {}: exec {} started: {:?}",
            self.container_id,
            self.exec_id,
            self.opts.command
        );
        self.waiter = Some(Waiter::start(
            self.agent.clone(),
            self.container_id.clone(),
            self.exec_id.clone(),
        ));
        if let (true, Some(size)) = (self.opts.tty, size) {
            resize_tty(&mut self.agent, &self.container_id, &self.exec_id, size).await;
        }
        let stdout = self
            .agent
            .read_stdout(self.request())
            .await
            .map_err(|s| rpc_error("ReadStdout", &s))?
            .into_inner();
        let stdout = if self.opts.stdout {
            Some(ChunkReader::agent(stdout))
        } else {
            drain(stdout);
            None
        };
        // A tty has one output stream: stderr goes to the terminal too.
        let stderr = if self.opts.tty {
            None
        } else {
            let s = self
                .agent
                .read_stderr(self.request())
                .await
                .map_err(|s| rpc_error("ReadStderr", &s))?
                .into_inner();
            if self.opts.stderr {
                Some(ChunkReader::agent(s))
            } else {
                drain(s);
                None
            }
        };
        let stdin = if self.opts.stdin {
            Some(stdin_writer(
                self.agent.clone(),
                self.container_id.clone(),
                self.exec_id.clone(),
                true,
            ))
        } else if !self.opts.tty {
            // No stdin asked for: the process reads EOF, as from /dev/null. (A terminal
            // without input is left open, as upstream's.)
            self.agent
                .close_stdin(self.request())
                .await
                .map_err(|s| rpc_error("CloseStdin", &s))?;
            None
        } else {
            None
        };
        Ok(ExecIo {
            stdin,
            stdout,
            stderr,
        })
    }

    async fn resize(&mut self, size: TerminalSize) {
        resize_tty(&mut self.agent, &self.container_id, &self.exec_id, size).await;
    }

    async fn wait(&mut self) -> io::Result<i32> {
        match self.waiter.as_mut() {
            Some(w) => w.wait().await,
            None => std::future::pending().await,
        }
    }

    async fn terminate(&mut self) {
        if self.waiter.as_ref().is_none_or(Waiter::exited) {
            return;
        }
        tracing::info!(
            "container {}: exec {}: the client went away, killing it",
            self.container_id,
            self.exec_id
        );
        let req = pb::SignalProcessRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            signal: libc::SIGKILL,
            all: false,
        };
        if let Err(s) = self.agent.signal_process(req).await {
            tracing::debug!("exec {}: SIGKILL: {}", self.exec_id, s.message());
        }
    }
}
