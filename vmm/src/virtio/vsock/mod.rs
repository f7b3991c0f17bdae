//! virtio-vsock with a Firecracker-style hybrid Unix socket on the host.
//!
//! - Host-initiated: connect to the VM's socket, write `CONNECT <port>\n`, read `OK <host port>\n`,
//!   then the stream is the connection to the guest's listener on `<port>`.
//! - Guest-initiated: a guest connection to host CID 2, port P, is forwarded to a Unix socket
//!   listening at `<socket>_<P>`.
//!
//! Stream sockets only, with per-connection credit flow control (virtio 1.1, 5.10.6.3).

mod conn;
mod device;
mod event;
mod muxer;
pub mod packet;
#[cfg(test)]
mod stream_tests;

pub use device::{Vsock, VsockError};

/// The host's CID.
pub const HOST_CID: u64 = 2;
