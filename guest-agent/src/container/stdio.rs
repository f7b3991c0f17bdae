//! Stdio of container processes: pipes (or a pty) on the child side, async pumps and
//! channels on the agent side.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

use crate::sys::ioctl;

/// Chunks of output, in order; the stream ends when the process closes the descriptor.
pub type Output = mpsc::Receiver<Vec<u8>>;

/// The agent's side of a process's stdio.
pub struct Stdio {
    /// Writer to the process's stdin (None once closed).
    pub stdin: Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>,
    /// Stdout chunks; taken by a reader, returned when it goes away.
    pub stdout: Mutex<Option<Output>>,
    /// Stderr chunks; taken by a reader, returned when it goes away (empty for a tty).
    pub stderr: Mutex<Option<Output>>,
    /// Pty master, for resizing.
    pub tty: Option<OwnedFd>,
}

/// Descriptors handed to the child as 0, 1, 2.
pub struct ChildStdio {
    /// stdin, stdout, stderr of the child.
    pub fds: [OwnedFd; 3],
}

impl ChildStdio {
    /// `(fd, target)` pairs for the spawner.
    pub fn mapping(&self) -> [(RawFd, RawFd); 3] {
        [
            (self.fds[0].as_raw_fd(), 0),
            (self.fds[1].as_raw_fd(), 1),
            (self.fds[2].as_raw_fd(), 2),
        ]
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

const CHUNK: usize = 32 * 1024;
const QUEUE: usize = 64;

fn pump<R: AsyncRead + Unpin + Send + 'static>(mut r: R) -> Output {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut receiver_gone = false;
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Keep draining after the reader left so the process never blocks on a
                    // full pipe.
                    if !receiver_gone && tx.send(buf[..n].to_vec()).await.is_err() {
                        receiver_gone = true;
                    }
                }
            }
        }
    });
    rx
}

/// One reader of an output stream. When it is dropped (the host's stream ended or the host went
/// away, e.g. kennel-cri restarting), the receiver goes back through `put_back`, so a later
/// reader continues where this one stopped; chunks queue (and the process eventually blocks on
/// its pipe) while nobody reads, as with a CRI shim's log FIFO.
pub struct Reader {
    rx: Option<Output>,
    put_back: Option<Box<dyn FnOnce(Output) + Send>>,
}

impl Reader {
    /// Wraps `rx`; `put_back` receives it on drop.
    pub fn new(rx: Output, put_back: impl FnOnce(Output) + Send + 'static) -> Self {
        Self {
            rx: Some(rx),
            put_back: Some(Box::new(put_back)),
        }
    }
}

impl tokio_stream::Stream for Reader {
    type Item = Vec<u8>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<u8>>> {
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let (Some(rx), Some(f)) = (self.rx.take(), self.put_back.take()) {
            f(rx);
        }
    }
}

/// Creates the stdio of a new process: pipes, or a pty when `tty`.
pub fn create(tty: bool) -> std::io::Result<(Stdio, ChildStdio)> {
    if tty {
        let (master, slave) = ioctl::open_pty()?;
        let slave2 = slave.try_clone()?;
        let slave3 = slave.try_clone()?;
        let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        let (_none_tx, empty) = mpsc::channel(1);
        let stdio = Stdio {
            stdin: Mutex::new(Some(Box::new(writer))),
            stdout: Mutex::new(Some(pump(reader))),
            stderr: Mutex::new(Some(empty)),
            tty: Some(master),
        };
        return Ok((
            stdio,
            ChildStdio {
                fds: [slave, slave2, slave3],
            },
        ));
    }
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(in_w)?;
    let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?;
    let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)?;
    Ok((
        Stdio {
            stdin: Mutex::new(Some(Box::new(stdin))),
            stdout: Mutex::new(Some(pump(stdout))),
            stderr: Mutex::new(Some(pump(stderr))),
            tty: None,
        },
        ChildStdio {
            fds: [in_r, out_w, err_w],
        },
    ))
}

impl Stdio {
    /// Writes all of `data` to stdin; `Ok(false)` when stdin is already closed.
    pub async fn write(&self, data: &[u8]) -> std::io::Result<bool> {
        let mut guard = self.stdin.lock().await;
        match guard.as_mut() {
            None => Ok(false),
            Some(w) => {
                w.write_all(data).await?;
                w.flush().await?;
                Ok(true)
            }
        }
    }

    /// Closes stdin (the process reads EOF; for a tty, sends ^D).
    pub async fn close_stdin(&self) {
        let mut guard = self.stdin.lock().await;
        if let Some(mut w) = guard.take() {
            if self.tty.is_some() {
                let _ = w.write_all(&[4]).await;
            }
            let _ = w.shutdown().await;
        }
    }
}
