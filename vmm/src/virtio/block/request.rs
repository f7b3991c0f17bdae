//! virtio-blk request handling (virtio 1.1, 5.2.6): the queue logic, independent of KVM.
//!
//! Every request is answered: a malformed one (short header, no status byte, data not a whole
//! number of sectors, out-of-range sector, write to a read-only disk) completes with an error
//! status. Only a chain that cannot even carry a status byte is completed with length 0.

use super::device::{Disk, SECTOR_SIZE, SERIAL_LEN};
use crate::memory::GuestMemoryMmap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use virtio_queue::{DescriptorChain, Queue, QueueT};

/// Request types.
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Device id (serial).
pub const T_GET_ID: u32 = 8;
/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error (also for invalid requests).
pub const S_IOERR: u8 = 1;
/// Status: unsupported request type.
pub const S_UNSUPP: u8 = 2;

const HEADER_LEN: usize = 16;
/// Largest data transfer we accept in one request.
const MAX_TRANSFER: usize = 16 << 20;

/// Serves every available request; returns whether the driver should be interrupted.
pub fn process_queue(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    disk: &Mutex<Disk>,
) -> Result<bool, virtio_queue::Error> {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let len = handle(mem, chain, disk);
        queue.add_used(mem, head, len)?;
        used = true;
    }
    Ok(used && queue.needs_notification(mem)?)
}

/// Handles one request; returns the number of bytes written into guest buffers.
pub fn handle(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    disk: &Mutex<Disk>,
) -> u32 {
    let (mut reader, mut writer) = match (chain.clone().reader(mem), chain.writer(mem)) {
        (Ok(r), Ok(w)) => (r, w),
        _ => {
            tracing::warn!("virtio-blk: descriptor chain outside guest memory");
            return 0;
        }
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        tracing::warn!("virtio-blk: request without a status byte");
        return 0;
    }
    let mut status_writer = match writer.split_at(writable - 1) {
        Ok(w) => w,
        Err(_) => return 0,
    };
    let mut header = [0u8; HEADER_LEN];
    let status = if reader.read_exact(&mut header).is_err() {
        S_IOERR
    } else {
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let disk = disk.lock().unwrap_or_else(|e| e.into_inner());
        execute(&disk, kind, sector, &mut reader, &mut writer)
    };
    let data_written = writer.bytes_written();
    if status_writer.write_all(&[status]).is_err() {
        return data_written as u32;
    }
    (data_written + 1) as u32
}

fn execute(
    disk: &Disk,
    kind: u32,
    sector: u64,
    reader: &mut virtio_queue::Reader<'_>,
    writer: &mut virtio_queue::Writer<'_>,
) -> u8 {
    match kind {
        T_IN => {
            let len = writer.available_bytes();
            match checked_range(disk, sector, len) {
                Some(offset) => {
                    let mut buf = vec![0u8; len];
                    match disk
                        .file
                        .as_ref()
                        .map(|f| f.read_exact_at(&mut buf, offset))
                    {
                        Some(Ok(())) if writer.write_all(&buf).is_ok() => S_OK,
                        _ => S_IOERR,
                    }
                }
                None => S_IOERR,
            }
        }
        T_OUT => {
            let len = reader.available_bytes();
            if disk.read_only {
                return S_IOERR;
            }
            match checked_range(disk, sector, len) {
                Some(offset) => {
                    let mut buf = vec![0u8; len];
                    if reader.read_exact(&mut buf).is_err() {
                        return S_IOERR;
                    }
                    match disk.file.as_ref().map(|f| f.write_all_at(&buf, offset)) {
                        Some(Ok(())) => S_OK,
                        _ => S_IOERR,
                    }
                }
                None => S_IOERR,
            }
        }
        T_FLUSH => match disk.file.as_ref() {
            Some(f) if !disk.read_only => {
                if f.sync_data().is_ok() {
                    S_OK
                } else {
                    S_IOERR
                }
            }
            _ => S_OK,
        },
        T_GET_ID => {
            let n = writer.available_bytes().min(SERIAL_LEN);
            if writer.write_all(&disk.serial[..n]).is_ok() {
                S_OK
            } else {
                S_IOERR
            }
        }
        _ => S_UNSUPP,
    }
}

/// Byte offset of `sector` if `len` bytes from there are whole sectors inside the disk.
fn checked_range(disk: &Disk, sector: u64, len: usize) -> Option<u64> {
    if !len.is_multiple_of(SECTOR_SIZE as usize) || len > MAX_TRANSFER {
        return None;
    }
    let sectors = len as u64 / SECTOR_SIZE;
    let end = sector.checked_add(sectors)?;
    (end <= disk.sectors && disk.file.is_some()).then(|| sector * SECTOR_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{get, memory, put, TestQueue, WRITE};

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x11_0000;
    const STATUS: u64 = 0x12_0000;

    fn disk(read_only: bool) -> (tempfile::NamedTempFile, Mutex<Disk>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut content = vec![0u8; 4 * 512];
        for (i, b) in content.iter_mut().enumerate() {
            *b = (i / 512) as u8 + 1;
        }
        f.write_all(&content).unwrap();
        let d = Disk::open(f.path(), read_only, "kennel-disk-1").unwrap();
        (f, Mutex::new(d))
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        put(mem, HDR, &h);
    }

    fn run(mem: &GuestMemoryMmap, tq: &TestQueue, disk: &Mutex<Disk>) {
        let mut q = tq.queue();
        process_queue(mem, &mut q, disk).unwrap();
    }

    #[test]
    fn read_sector() {
        let mem = memory();
        let (_f, d) = disk(true);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_IN, 2);
        tq.add(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, DATA, 512), vec![3u8; 512]);
        assert_eq!(get(&mem, STATUS, 1), vec![S_OK]);
        assert_eq!(tq.used(0).1, 513);
    }

    #[test]
    fn write_then_file_has_it() {
        let mem = memory();
        let (f, d) = disk(false);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_OUT, 1);
        put(&mem, DATA, &[0xab; 512]);
        tq.add(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_OK]);
        let content = std::fs::read(f.path()).unwrap();
        assert_eq!(&content[512..1024], &[0xab; 512][..]);
        assert_eq!(tq.used(0).1, 1);
    }

    #[test]
    fn write_to_read_only_fails() {
        let mem = memory();
        let (f, d) = disk(true);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_OUT, 0);
        tq.add(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_IOERR]);
        assert_eq!(std::fs::read(f.path()).unwrap()[0], 1);
    }

    #[test]
    fn out_of_range_and_partial_sectors_fail() {
        let mem = memory();
        let (_f, d) = disk(true);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_IN, 4);
        tq.add(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_IOERR]);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_IN, u64::MAX);
        tq.add(&[(HDR, 16, 0), (DATA, 100, WRITE), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_IOERR]);
    }

    #[test]
    fn get_id_returns_the_serial() {
        let mem = memory();
        let (_f, d) = disk(true);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_GET_ID, 0);
        tq.add(&[(HDR, 16, 0), (DATA, 20, WRITE), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(&get(&mem, DATA, 13), b"kennel-disk-1");
        assert_eq!(get(&mem, STATUS, 1), vec![S_OK]);
    }

    #[test]
    fn unknown_type_is_unsupported_and_short_header_is_an_error() {
        let mem = memory();
        let (_f, d) = disk(true);
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, 77, 0);
        tq.add(&[(HDR, 16, 0), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_UNSUPP]);
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(HDR, 8, 0), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_IOERR]);
    }

    #[test]
    fn malformed_chains_never_panic() {
        let mem = memory();
        let (_f, d) = disk(false);
        // No writable status byte at all.
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_IN, 0);
        tq.add(&[(HDR, 16, 0), (DATA, 512, 0)]);
        run(&mem, &tq, &d);
        assert_eq!(tq.used(0).1, 0);
        // A buffer outside guest memory.
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[
            (HDR, 16, 0),
            (0xffff_0000_0000, 512, WRITE),
            (STATUS, 1, WRITE),
        ]);
        run(&mem, &tq, &d);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tq.used(0).1, 0);
        // A chain that loops on itself ends (the queue bounds its length).
        let mut tq = TestQueue::new(&mem, 16);
        tq.raw(0, HDR, 16, crate::virtio::testutil::NEXT, 1);
        tq.raw(1, STATUS, 1, WRITE | crate::virtio::testutil::NEXT, 0);
        tq.publish(0);
        run(&mem, &tq, &d);
        // An index beyond the table ends the chain as well.
        let mut tq = TestQueue::new(&mem, 16);
        tq.raw(0, HDR, 16, crate::virtio::testutil::NEXT, 999);
        tq.publish(0);
        run(&mem, &tq, &d);
    }

    #[test]
    fn empty_slot_reads_fail() {
        let mem = memory();
        let d = Mutex::new(Disk::empty(true));
        let mut tq = TestQueue::new(&mem, 16);
        header(&mem, T_IN, 0);
        tq.add(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
        run(&mem, &tq, &d);
        assert_eq!(get(&mem, STATUS, 1), vec![S_IOERR]);
    }
}
