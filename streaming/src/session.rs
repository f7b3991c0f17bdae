//! What a backend provides to serve an exec or attach: the process' stdio, resize, its end, and
//! what to do when the client goes away.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::resize::TerminalSize;

/// A boxed byte source (the process' stdout or stderr, or a tty's output).
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// A boxed byte sink (the process' stdin, or a tty's input).
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// The stdio of a started session. A stream the client did not ask for may be `None`; with a tty,
/// `stdout` carries the terminal's output and `stderr` is unused.
#[derive(Default)]
pub struct ExecIo {
    /// Receives the client's stdin; shut down when the client closes stdin.
    pub stdin: Option<BoxWrite>,
    /// Read until EOF and sent on the stdout channel.
    pub stdout: Option<BoxRead>,
    /// Read until EOF and sent on the stderr channel.
    pub stderr: Option<BoxRead>,
}

/// A backend's exec (a new process) or attach (a running one). The server calls `start` once the
/// client's streams are open, then `resize` for each terminal size, `wait` until the process
/// ends, and `terminate` when the client disconnects or the connection idles out.
pub trait ExecSession: Send + 'static {
    /// Starts (or attaches to) the process. With a tty, `size` is the client's terminal size
    /// when it arrived in time.
    fn start(
        &mut self,
        size: Option<TerminalSize>,
    ) -> impl Future<Output = io::Result<ExecIo>> + Send;

    /// Applies a terminal size (tty sessions only).
    fn resize(&mut self, size: TerminalSize) -> impl Future<Output = ()> + Send;

    /// Resolves to the exit code once the process ended (attach: once it detached, usually 0).
    /// It must be cancel-safe: the server polls it alongside its other work.
    fn wait(&mut self) -> impl Future<Output = io::Result<i32>> + Send;

    /// The client is gone: kill the process (exec) or detach (attach).
    fn terminate(&mut self) -> impl Future<Output = ()> + Send;
}
