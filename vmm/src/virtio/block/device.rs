//! The block device: features, configuration space (capacity), activation, and the handle
//! the control API uses to attach, swap or detach the backing file.

use super::event;
use crate::virtio::{
    read_config_bytes, ActivateError, Activation, Interrupt, VirtioDevice, F_VERSION_1, TYPE_BLOCK,
};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Length of the device id returned by VIRTIO_BLK_T_GET_ID.
pub const SERIAL_LEN: usize = 20;
const QUEUE_SIZE: u16 = 256;
/// The device is read-only.
const F_RO: u64 = 1 << 5;
/// Flush command supported.
const F_FLUSH: u64 = 1 << 9;
/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;

/// Errors attaching a backing file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file cannot be opened.
    #[error("cannot open disk image {path}")]
    Open {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The serial is too long.
    #[error("disk serial {0:?} is longer than {SERIAL_LEN} bytes")]
    SerialTooLong(String),
    /// Another open of the file holds a conflicting lock: a read-write image is in use by
    /// another VM (or a read-only slot asks for an image another VM writes).
    #[error("disk image {0} is in use by another VM")]
    InUse(String),
}

/// The backing of one slot: a file (or nothing) and its identity.
#[derive(Debug, Default)]
pub struct Disk {
    pub(super) file: Option<File>,
    pub(super) path: Option<PathBuf>,
    pub(super) sectors: u64,
    pub(super) serial: [u8; SERIAL_LEN],
    pub(super) read_only: bool,
}

impl Disk {
    /// An empty slot (capacity 0).
    pub fn empty(read_only: bool) -> Self {
        Self {
            read_only,
            ..Default::default()
        }
    }

    /// A slot backed by `path`.
    pub fn open(path: &Path, read_only: bool, serial: &str) -> Result<Self, DiskError> {
        let mut disk = Self::empty(read_only);
        disk.set_backing(path, serial)?;
        Ok(disk)
    }

    /// Replaces the backing file. The slot's read-only flag was fixed at boot.
    ///
    /// The file is locked (`flock`) for as long as this slot holds it: exclusively on a
    /// read-write slot, shared on a read-only one, so a filesystem image is never written by
    /// two VMs (or read by one while another writes it).
    pub fn set_backing(&mut self, path: &Path, serial: &str) -> Result<(), DiskError> {
        let serial = serial_bytes(serial)?;
        let err = |source| DiskError::Open {
            path: path.display().to_string(),
            source,
        };
        // Attaching the file this slot already holds again (a retried attach) keeps the open
        // file and its lock: a second open would conflict with the slot's own lock.
        if let (Some(file), Some(held)) = (&self.file, &self.path) {
            if held == path {
                self.sectors = file.metadata().map_err(err)?.len() / SECTOR_SIZE;
                self.serial = serial;
                return Ok(());
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .open(path)
            .map_err(err)?;
        lock(&file, !self.read_only).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => DiskError::InUse(path.display().to_string()),
            _ => err(e),
        })?;
        let len = file.metadata().map_err(err)?.len();
        self.file = Some(file);
        self.path = Some(path.to_path_buf());
        self.sectors = len / SECTOR_SIZE;
        self.serial = serial;
        Ok(())
    }

    /// Removes the backing file; the slot reads as an empty disk.
    pub fn clear(&mut self) {
        self.file = None;
        self.path = None;
        self.sectors = 0;
        self.serial = [0; SERIAL_LEN];
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Current backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the slot refuses writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The serial as a string (without trailing NULs).
    pub fn serial(&self) -> String {
        let end = self
            .serial
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(SERIAL_LEN);
        String::from_utf8_lossy(&self.serial[..end]).into_owned()
    }
}

/// Takes a non-blocking `flock` on `file`: exclusive for a writer, shared for a reader. The
/// lock belongs to this open file description, so it lasts until the slot drops the file
/// (detach, swap, VMM exit — also a kill -9) and conflicts with other opens even in the same
/// process. Fails with `WouldBlock` when a conflicting lock is held.
fn lock(file: &File, exclusive: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call; flock touches no
        // memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn serial_bytes(serial: &str) -> Result<[u8; SERIAL_LEN], DiskError> {
    if serial.len() > SERIAL_LEN {
        return Err(DiskError::SerialTooLong(serial.into()));
    }
    let mut out = [0u8; SERIAL_LEN];
    out[..serial.len()].copy_from_slice(serial.as_bytes());
    Ok(out)
}

/// A handle on a running block device: swap its backing and tell the guest.
#[derive(Clone)]
pub struct BlockHandle {
    disk: Arc<Mutex<Disk>>,
    interrupt: Arc<Mutex<Option<Arc<Interrupt>>>>,
}

impl BlockHandle {
    /// Runs `f` on the disk, then raises a configuration-change interrupt if the driver is up.
    pub fn update<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> T {
        let out = f(&mut self.disk.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(irq) = &*self.interrupt.lock().unwrap_or_else(|e| e.into_inner()) {
            irq.signal_config_change();
        }
        out
    }

    /// Reads the disk state.
    pub fn with<T>(&self, f: impl FnOnce(&Disk) -> T) -> T {
        f(&self.disk.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The virtio-blk device.
pub struct Block {
    disk: Arc<Mutex<Disk>>,
    interrupt: Arc<Mutex<Option<Arc<Interrupt>>>>,
    features: u64,
}

impl Block {
    /// A device over `disk`.
    pub fn new(disk: Disk) -> Self {
        let mut features = F_VERSION_1 | F_FLUSH;
        if disk.read_only {
            features |= F_RO;
        }
        Self {
            disk: Arc::new(Mutex::new(disk)),
            interrupt: Arc::new(Mutex::new(None)),
            features,
        }
    }

    /// A handle for the control API.
    pub fn handle(&self) -> BlockHandle {
        BlockHandle {
            disk: self.disk.clone(),
            interrupt: self.interrupt.clone(),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config starts with `le64 capacity`; the rest is unused (no features).
        let sectors = self.disk.lock().unwrap_or_else(|e| e.into_inner()).sectors;
        read_config_bytes(&sectors.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let mut queues = a.queues;
        let (queue, notify) = queues.pop().ok_or(ActivateError::BadQueue(0))?;
        *self.interrupt.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.interrupt.clone());
        event::spawn(a.mem, queue, notify, a.interrupt, self.disk.clone(), a.sync)
            .map_err(ActivateError::Worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(8 * SECTOR_SIZE).unwrap();
        f
    }

    #[test]
    fn a_read_write_image_is_refused_to_a_second_open() {
        let f = image();
        let first = Disk::open(f.path(), false, "pv-1").unwrap();
        let e = Disk::open(f.path(), false, "pv-2").unwrap_err();
        assert!(matches!(e, DiskError::InUse(_)), "{e}");
        assert_eq!(
            e.to_string(),
            format!("disk image {} is in use by another VM", f.path().display())
        );
        // A reader is refused too while a writer holds it.
        assert!(matches!(
            Disk::open(f.path(), true, "pv-3"),
            Err(DiskError::InUse(_))
        ));
        drop(first);
        Disk::open(f.path(), false, "pv-2").expect("free again once the first slot let go");
    }

    #[test]
    fn read_only_opens_share_and_keep_writers_out() {
        let f = image();
        let a = Disk::open(f.path(), true, "img-a").unwrap();
        let b = Disk::open(f.path(), true, "img-b").unwrap();
        assert!(matches!(
            Disk::open(f.path(), false, "pv"),
            Err(DiskError::InUse(_))
        ));
        drop((a, b));
        Disk::open(f.path(), false, "pv").unwrap();
    }

    #[test]
    fn clearing_or_swapping_a_slot_releases_its_lock() {
        let (f, g) = (image(), image());
        let mut slot = Disk::empty(false);
        slot.set_backing(f.path(), "pv-f").unwrap();
        slot.set_backing(g.path(), "pv-g").unwrap();
        let other = Disk::open(f.path(), false, "x").expect("f released by the swap");
        drop(other);
        slot.set_backing(g.path(), "pv-g")
            .expect("the same file again in the same slot");
        slot.clear();
        Disk::open(g.path(), false, "x").expect("g released by the clear");
    }
}
