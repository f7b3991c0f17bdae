//! Validation of CRI `Exec`, `Attach` and `PortForward` requests, and what a validated one keeps
//! until its URL is used ([`Pending`]): the full ids, the kennel-stream options, the pod IP.

use crate::runtime::{CriError, Runtime};
use crate::state::{ContainerRecord, ContainerState, SandboxState};
use k8s_cri::v1 as cri;
use kennel_stream::ExecOptions;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A validated streaming request, waiting for its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A new process in a running container.
    Exec {
        /// Full container id.
        container_id: String,
        /// Its sandbox.
        sandbox_id: String,
        /// The command and streams.
        opts: ExecOptions,
    },
    /// The init process of a running container.
    Attach {
        /// Full container id.
        container_id: String,
        /// Its sandbox.
        sandbox_id: String,
        /// The streams (no command).
        opts: ExecOptions,
        /// The container's `stdin_once`: the first attach's stdin EOF closes its stdin.
        stdin_once: bool,
    },
    /// Connections to ports of a ready sandbox.
    PortForward {
        /// Full sandbox id.
        sandbox_id: String,
        /// The VM's hybrid vsock socket (the agent's port forwarder).
        vsock: PathBuf,
        /// The pod IP, dialled when the agent has no forwarder.
        ip: Ipv4Addr,
        /// The ports asked for (may be empty: SPDY clients name a port per stream).
        ports: Vec<u16>,
    },
}

impl Pending {
    /// The URL path segment of this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

/// Streams asked for, checked as kubelet's streaming server does.
fn stream_options(
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<ExecOptions, CriError> {
    if tty && stderr {
        return Err(CriError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !(stdin || stdout || stderr) {
        return Err(CriError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(ExecOptions {
        command: Vec::new(),
        container: None,
        stdin,
        stdout,
        stderr,
        tty,
    })
}

/// The kennel-stream options of a CRI `ExecRequest`.
pub fn exec_options(r: &cri::ExecRequest) -> Result<ExecOptions, CriError> {
    if r.cmd.is_empty() {
        return Err(CriError::InvalidArgument("cmd is required".into()));
    }
    let mut opts = stream_options(r.stdin, r.stdout, r.stderr, r.tty)?;
    opts.command = r.cmd.clone();
    Ok(opts)
}

/// The kennel-stream options of a CRI `AttachRequest` to a container created with `config`.
pub fn attach_options(
    r: &cri::AttachRequest,
    config: &cri::ContainerConfig,
) -> Result<ExecOptions, CriError> {
    let opts = stream_options(r.stdin, r.stdout, r.stderr, r.tty)?;
    if r.stdin && !config.stdin {
        return Err(CriError::FailedPrecondition(
            "stdin is not enabled for this container".into(),
        ));
    }
    if r.tty != config.tty {
        return Err(CriError::InvalidArgument(format!(
            "tty is {} but the container was created with tty {}",
            r.tty, config.tty
        )));
    }
    Ok(opts)
}

/// The ports of a CRI `PortForwardRequest`.
pub fn ports(r: &cri::PortForwardRequest) -> Result<Vec<u16>, CriError> {
    r.port
        .iter()
        .map(|&p| {
            u16::try_from(p)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| CriError::InvalidArgument(format!("port {p} is not in 1..=65535")))
        })
        .collect()
}

fn required(what: &str, id: &str) -> Result<(), CriError> {
    if id.is_empty() {
        return Err(CriError::InvalidArgument(format!("{what} is required")));
    }
    Ok(())
}

impl Runtime {
    /// A running container by id (or unique prefix).
    fn running_container(&self, id: &str) -> Result<ContainerRecord, CriError> {
        required("container_id", id)?;
        let c = self.container_rec(id)?;
        if c.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running (state {:?})",
                c.id, c.state
            )));
        }
        Ok(c)
    }

    /// Validates a CRI `Exec`.
    pub fn prepare_exec(&self, r: &cri::ExecRequest) -> Result<Pending, CriError> {
        let c = self.running_container(&r.container_id)?;
        Ok(Pending::Exec {
            opts: exec_options(r)?,
            container_id: c.id,
            sandbox_id: c.sandbox_id,
        })
    }

    /// Validates a CRI `Attach`.
    pub fn prepare_attach(&self, r: &cri::AttachRequest) -> Result<Pending, CriError> {
        let c = self.running_container(&r.container_id)?;
        Ok(Pending::Attach {
            opts: attach_options(r, &c.config)?,
            stdin_once: c.config.stdin_once,
            container_id: c.id,
            sandbox_id: c.sandbox_id,
        })
    }

    /// Validates a CRI `PortForward`.
    pub fn prepare_port_forward(&self, r: &cri::PortForwardRequest) -> Result<Pending, CriError> {
        required("pod_sandbox_id", &r.pod_sandbox_id)?;
        let ports = ports(r)?;
        let s = self
            .state
            .sandbox(&r.pod_sandbox_id)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {} not found", r.pod_sandbox_id)))?;
        let vsock = match (&s.state, &s.vmm) {
            (SandboxState::Ready, Some(v)) => v.vsock_socket.clone(),
            _ => {
                return Err(CriError::FailedPrecondition(format!(
                    "sandbox {} is not ready",
                    s.id
                )))
            }
        };
        let ip =
            s.ip.as_deref()
                .ok_or_else(|| CriError::FailedPrecondition(format!("sandbox {} has no IP", s.id)))?
                .parse()
                .map_err(|e| CriError::Internal(format!("sandbox {}: its IP: {e}", s.id)))?;
        Ok(Pending::PortForward {
            sandbox_id: s.id,
            vsock,
            ip,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(cmd: &[&str], streams: [bool; 4]) -> cri::ExecRequest {
        let [stdin, stdout, stderr, tty] = streams;
        cri::ExecRequest {
            container_id: "c".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn exec_requests_map_to_stream_options() {
        let o = exec_options(&exec(&["sh", "-c", "echo"], [false, true, true, false])).unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo"]);
        assert!(!o.stdin && o.stdout && o.stderr && !o.tty);
        assert_eq!(o.container, None);
        let o = exec_options(&exec(&["sh"], [true, true, false, true])).unwrap();
        assert!(o.stdin && o.stdout && !o.stderr && o.tty);
    }

    #[test]
    fn bad_exec_requests_name_the_problem() {
        let e = exec_options(&exec(&[], [false, true, false, false])).unwrap_err();
        assert!(matches!(&e, CriError::InvalidArgument(m) if m == "cmd is required"));
        let e = exec_options(&exec(&["ls"], [false; 4])).unwrap_err();
        assert!(
            e.to_string().contains("one of stdin, stdout, or stderr"),
            "{e}"
        );
        let e = exec_options(&exec(&["ls"], [false, true, true, true])).unwrap_err();
        assert!(e.to_string().contains("tty and stderr"), "{e}");
    }

    #[test]
    fn attach_checks_the_container_config() {
        let r = cri::AttachRequest {
            container_id: "c".into(),
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        let mut config = cri::ContainerConfig::default();
        let e = attach_options(&r, &config).unwrap_err();
        assert!(
            matches!(&e, CriError::FailedPrecondition(m) if m.contains("stdin is not enabled")),
            "{e}"
        );
        config.stdin = true;
        let o = attach_options(&r, &config).unwrap();
        assert!(o.stdin && o.stdout && !o.stderr && o.command.is_empty());
        let tty = cri::AttachRequest {
            tty: true,
            ..r.clone()
        };
        assert!(attach_options(&tty, &config)
            .unwrap_err()
            .to_string()
            .contains("tty"));
        config.tty = true;
        assert!(attach_options(&tty, &config).unwrap().tty);
    }

    #[test]
    fn ports_are_checked() {
        let r = |port: Vec<i32>| cri::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port,
        };
        assert_eq!(ports(&r(vec![8080, 1, 65535])).unwrap(), [8080, 1, 65535]);
        assert!(ports(&r(vec![])).unwrap().is_empty());
        for bad in [0, -1, 65536] {
            let e = ports(&r(vec![80, bad])).unwrap_err();
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
    }
}
