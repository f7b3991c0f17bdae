//! SPDY/3.1: the frame codec, header blocks with their zlib dictionary, the server connection,
//! and exec and port-forward on top of it.

pub mod conn;
pub mod dictionary;
pub(crate) mod exec;
pub mod frame;
pub mod header;
pub(crate) mod portforward;
