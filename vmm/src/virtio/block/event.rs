//! The block worker: waits on the queue's ioeventfd and serves every available request.

use super::device::Disk;
use super::request;
use crate::memory::GuestMemoryMmap;
use crate::virtio::{Interrupt, WorkerSync};
use std::sync::{Arc, Mutex};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub(super) fn spawn(
    mem: GuestMemoryMmap,
    mut queue: Queue,
    notify: EventFd,
    interrupt: Arc<Interrupt>,
    disk: Arc<Mutex<Disk>>,
    sync: WorkerSync,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("virtio-blk".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Block) {
                tracing::error!("virtio-blk: device stops: {}", e.chain());
                return;
            }
            serve(&mem, &mut queue, &notify, &interrupt, &disk, &sync)
        })?;
    Ok(())
}

/// Serves the queue until its eventfd or the queue itself breaks.
fn serve(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    notify: &EventFd,
    interrupt: &Interrupt,
    disk: &Mutex<Disk>,
    sync: &WorkerSync,
) {
    loop {
        if let Err(e) = wait(notify) {
            tracing::error!("virtio-blk: queue eventfd: {e}");
            return;
        }
        let _batch = sync.enter();
        let result = request::process_queue(mem, queue, disk);
        sync.publish(&[&*queue]);
        match result {
            Ok(true) => interrupt.signal_used_queue(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!("virtio-blk: queue is broken, device stops: {e}");
                return;
            }
        }
    }
}

/// Blocks until the eventfd is signalled (it is non-blocking, so poll first).
fn wait(fd: &EventFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        match fd.read() {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
