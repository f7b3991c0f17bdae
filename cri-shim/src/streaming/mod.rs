//! CRI streaming: `Exec`, `Attach` and `PortForward` as containerd and CRI-O serve them. The CRI
//! call validates the request ([`requests`]), keeps it under a random single-use token
//! ([`cache`]) and returns `<base>/exec|attach|portforward/<token>`; kubelet proxies the
//! client's upgraded connection to that URL, where [`server`] takes the request back and serves
//! it with kennel-stream (SPDY/3.1 and WebSocket): an [`exec`] or [`attach`] session backed by
//! the guest agent, or TCP connections to the pod ([`portforward`]).

pub mod attach;
pub mod cache;
pub mod exec;
pub mod portforward;
pub mod requests;
pub mod server;
pub mod stdio;

pub use requests::Pending;
pub use server::{StreamingError, StreamingServer, Streams};
