//! gRPC protocol between the host and kennel-agent.
//!
//! [`pb`] holds the generated messages, the `Agent` service trait (server side) and the
//! generated client; [`client`] connects that client over a Unix socket or over a
//! Firecracker-style hybrid vsock socket (`CONNECT <port>\n` → `OK <port>\n`); [`forward`] is
//! the agent's port forwarder (a byte stream to a port on the pod's localhost).
#![forbid(unsafe_code)]

pub mod client;
pub mod forward;

/// Generated protobuf messages and tonic service/client for `kennel.agent.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("kennel.agent.v1");
}

pub use client::{AgentClient, ClientError};

/// Version of this protocol; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default vsock port the agent listens on inside the VM.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;
