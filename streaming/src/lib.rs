//! kennel-stream: the server side of the Kubernetes streaming protocols — exec, attach and
//! port-forward over SPDY/3.1 and WebSocket, as kubelet and the API server speak them to kubectl
//! and client-go — behind a backend-neutral API.
//!
//! A handler answers an upgrade request in three steps:
//!
//! 1. [`negotiate_exec`] / [`negotiate_port_forward`] pick the protocol from the request headers
//!    (and [`ExecOptions`] / [`PortForwardOptions`] parse the query); a [`Refusal`] is answered as
//!    it is (400 or 403).
//! 2. The handler answers with [`Negotiated::response`] (101) and takes the upgraded connection
//!    (`hyper::upgrade::on`).
//! 3. [`serve_exec`] (or [`serve_attach`]) runs an [`ExecSession`] over it;
//!    [`serve_port_forward`] dials one backend connection per forwarded connection.
//!
//! The crate README lists the protocols, channels and limits.
#![forbid(unsafe_code)]

pub mod exec;
pub mod limits;
pub mod negotiate;
pub mod options;
pub mod portforward;
pub mod proxy;
pub mod resize;
pub mod session;
pub mod spdy;
pub mod status;
pub mod ws;

pub use exec::{serve_attach, serve_exec, ExecError};
pub use limits::Limits;
pub use negotiate::{negotiate_exec, negotiate_port_forward, Negotiated, Protocol, Refusal};
pub use options::{ExecOptions, PortForwardOptions, QueryError};
pub use portforward::{serve_port_forward, Dial, PortForwardError};
pub use proxy::{forward_upgrade, ProxyError};
pub use resize::TerminalSize;
pub use session::{BoxRead, BoxWrite, ExecIo, ExecSession};
pub use status::ExitStatus;
