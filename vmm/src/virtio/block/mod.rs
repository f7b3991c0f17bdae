//! virtio-blk: a file-backed disk, read-only or read-write, with a serial the guest can find it by
//! (`/sys/block/vdX/serial`). A slot may start empty and get (or swap) its backing file after boot;
//! the guest learns of it through a configuration-change interrupt.

mod device;
mod event;
pub mod request;

pub use device::{Block, BlockHandle, Disk, DiskError, SERIAL_LEN};
