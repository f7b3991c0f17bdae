//! Guest RAM: exactly the size asked for, laid out around the 32-bit MMIO gap.

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// The guest's memory.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Smallest guest we accept; the kernel itself needs more, checked when it is loaded.
pub const MIN_MEM_MIB: u64 = 16;

/// Errors creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is below the minimum.
    #[error("guest memory of {0} MiB is too small (minimum {MIN_MEM_MIB} MiB)")]
    TooSmall(u64),
    /// The host could not map the memory.
    #[error("cannot allocate {mib} MiB of guest memory")]
    Allocate {
        /// Requested size.
        mib: u64,
        /// Cause.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// A snapshot's memory file cannot be mapped.
    #[error("cannot map snapshot memory {path}")]
    Snapshot {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// KVM refused a memory slot.
    #[error("KVM refused memory slot {slot}")]
    Register {
        /// Slot number.
        slot: u32,
        /// Cause.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The guest-physical ranges holding `size` bytes of RAM, skipping the MMIO gap.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Allocates `mib` MiB of anonymous guest memory.
pub fn create(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if mib < MIN_MEM_MIB {
        return Err(MemoryError::TooSmall(mib));
    }
    GuestMemoryMmap::from_ranges(&ram_ranges(mib << 20))
        .map_err(|source| MemoryError::Allocate { mib, source })
}

/// Maps a snapshot's memory file copy-on-write (`MAP_PRIVATE`): the guest's writes stay in this
/// process, and pages it never writes are shared through the page cache with every other VM
/// restored from the same file.
pub fn from_snapshot(path: &std::path::Path, mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    use vm_memory::mmap::MmapRegionBuilder;
    use vm_memory::{FileOffset, GuestRegionMmap};
    let file = std::fs::File::open(path).map_err(|e| MemoryError::Snapshot {
        path: path.display().to_string(),
        source: e,
    })?;
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (addr, len) in ram_ranges(mib << 20) {
        let f = file.try_clone().map_err(|e| MemoryError::Snapshot {
            path: path.display().to_string(),
            source: e,
        })?;
        let region = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::new(f, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| MemoryError::Snapshot {
                path: path.display().to_string(),
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        regions.push(GuestRegionMmap::new(region, addr).ok_or(MemoryError::TooSmall(mib))?);
        offset += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Snapshot {
        path: path.display().to_string(),
        source: std::io::Error::other(format!("{e:?}")),
    })
}

/// Registers every region of `mem` with KVM, one slot per region.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = mem
            .get_host_address(region.start_addr())
            .expect("region start is inside guest memory");
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host` points at `region.len()` bytes mapped by `mem`, which outlives the VM
        // (the VM owns both and drops the VM fd first).
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn big_guest_skips_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64 + r[1].1 as u64, 4 << 30);
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
    }

    #[test]
    fn too_small_is_refused() {
        assert!(matches!(create(4), Err(MemoryError::TooSmall(4))));
    }
}
