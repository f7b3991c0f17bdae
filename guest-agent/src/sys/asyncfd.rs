//! Registering an owned file with tokio's reactor.

use std::fs::File;
use std::io;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `file` with the current tokio reactor for `interest`.
pub fn register(file: File, interest: Interest) -> io::Result<AsyncFd<File>> {
    // SAFETY: the AsyncFd owns `file`, so its descriptor stays open and refers to the same
    // open file description for the AsyncFd's whole lifetime; `File::as_raw_fd` always
    // returns that one descriptor.
    unsafe { AsyncFd::register_with_interest(file, interest) }.map_err(|e| e.into_parts().1)
}
