//! The vsock device: configuration space (guest CID), three queues (rx, tx, event), and the
//! host socket, bound when the device is created so host clients can connect before the guest
//! driver is up.

use super::event;
use super::muxer::{Muxer, LISTENER_TOKEN};
use crate::virtio::{
    read_config_bytes, ActivateError, Activation, VirtioDevice, F_VERSION_1, TYPE_VSOCK,
};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const QUEUE_SIZE: u16 = 256;
/// Lowest CID a guest may have (0..=2 are reserved).
pub const MIN_GUEST_CID: u64 = 3;

/// Errors creating the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// Reserved or out-of-range CID.
    #[error("guest CID {0} is reserved (must be >= {MIN_GUEST_CID} and < 2^32-1)")]
    Cid(u64),
    /// The host socket cannot be bound.
    #[error("cannot listen on vsock socket {path}")]
    Bind {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// epoll failure.
    #[error("cannot create the vsock event loop")]
    Epoll(#[source] std::io::Error),
}

/// The vsock device.
pub struct Vsock {
    cid: u64,
    muxer: Option<Muxer>,
}

impl Vsock {
    /// A device for guest `cid` whose host side listens at `uds_path` (replacing a stale socket).
    pub fn new(cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        if cid < MIN_GUEST_CID || cid >= u64::from(u32::MAX) {
            return Err(VsockError::Cid(cid));
        }
        let bind_err = |source| VsockError::Bind {
            path: uds_path.display().to_string(),
            source,
        };
        if uds_path.exists() {
            std::fs::remove_file(uds_path).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
            )
            .map_err(VsockError::Epoll)?;
        let muxer = Muxer::new(cid, PathBuf::from(uds_path), listener, epoll);
        Ok(Self {
            cid,
            muxer: Some(muxer),
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != 3 {
            return Err(ActivateError::BadQueue(a.queues.len()));
        }
        let muxer = self
            .muxer
            .take()
            .ok_or(ActivateError::Worker(std::io::Error::other(
                "vsock already active",
            )))?;
        event::spawn(self.cid, a, muxer).map_err(ActivateError::Worker)
    }
}
