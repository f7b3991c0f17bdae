//! Loading the guest: ELF vmlinux, initrd, command line and the zero page (64-bit boot protocol).

use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START,
    ZERO_PAGE_START,
};
use crate::memory::GuestMemoryMmap;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::Elf;
use linux_loader::loader::{load_cmdline, KernelLoader};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Errors loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {path}")]
    KernelRead {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel file is not an ELF image.
    #[error("kernel {0} is not an ELF vmlinux (no ELF magic)")]
    NotElf(String),
    /// The ELF loader refused the kernel (or it does not fit).
    #[error("cannot load kernel {path} into {mem_mib} MiB of guest memory")]
    KernelLoad {
        /// Path given.
        path: String,
        /// Guest memory size.
        mem_mib: u64,
        /// Cause.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initrd file cannot be read.
    #[error("cannot read initrd {path}")]
    InitrdRead {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Kernel and initrd do not both fit in guest memory.
    #[error("guest memory too small: kernel ends at {kernel_end:#x}, initrd of {initrd_size} bytes does not fit below {top:#x}")]
    NoRoomForInitrd {
        /// End of the loaded kernel.
        kernel_end: u64,
        /// Initrd size.
        initrd_size: usize,
        /// Highest usable low-memory address.
        top: u64,
    },
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// Writing boot structures into guest memory failed.
    #[error("cannot write {0} into guest memory")]
    GuestWrite(&'static str),
}

/// Where the kernel was loaded and where it starts.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 64-bit entry point (guest physical).
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
}

/// Loads an ELF vmlinux at its physical addresses.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|source| BootError::KernelRead {
        path: shown.clone(),
        source,
    })?;
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != ELF_MAGIC {
        return Err(BootError::NotElf(shown));
    }
    let mem_mib = mem_size(mem) >> 20;
    let result =
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::KernelLoad {
                path: shown,
                mem_mib,
                source,
            }
        })?;
    Ok(LoadedKernel {
        entry: result.kernel_load,
        end: result.kernel_end,
    })
}

/// An initrd placed in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedInitrd {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: usize,
}

/// Places the initrd page-aligned at the top of low memory, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<LoadedInitrd, BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::InitrdRead {
        path: path.display().to_string(),
        source,
    })?;
    let top = low_mem_end(mem);
    let size = data.len();
    let addr = top
        .checked_sub(size as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or(BootError::NoRoomForInitrd {
            kernel_end,
            initrd_size: size,
            top,
        })?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|_| BootError::GuestWrite("initrd"))?;
    Ok(LoadedInitrd {
        addr: GuestAddress(addr),
        size,
    })
}

/// Builds a kernel command line from space-separated arguments.
pub fn cmdline(args: &[String]) -> Result<Cmdline, BootError> {
    let mut cl = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    for arg in args.iter().filter(|a| !a.is_empty()) {
        cl.insert_str(arg)
            .map_err(|e| BootError::Cmdline(format!("{arg:?}: {e}")))?;
    }
    Ok(cl)
}

/// Writes the command line and the zero page (with the e820 map).
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    cmdline: &Cmdline,
    initrd: Option<LoadedInitrd>,
) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();

    let mut params = boot_params::default();
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr.raw_value() as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    for (addr, size) in e820_ram(mem_size(mem)) {
        let i = params.e820_entries as usize;
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        };
        params.e820_entries += 1;
    }
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|_| BootError::GuestWrite("boot parameters"))
}

/// The e820 RAM entries for a guest of `size` bytes: low RAM below the EBDA, then high memory
/// around the MMIO gap.
pub fn e820_ram(size: u64) -> Vec<(u64, u64)> {
    let mut map = vec![(0, EBDA_START)];
    if size <= MMIO_GAP_START {
        map.push((HIMEM_START, size - HIMEM_START));
    } else {
        map.push((HIMEM_START, MMIO_GAP_START - HIMEM_START));
        map.push((MMIO_GAP_END, size - MMIO_GAP_START));
    }
    map
}

fn mem_size(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::GuestMemoryRegion;
    mem.iter().map(|r| r.len()).sum()
}

fn low_mem_end(mem: &GuestMemoryMmap) -> u64 {
    mem_size(mem).min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;

    #[test]
    fn e820_covers_exactly_the_ram() {
        let size = 256 << 20;
        let map = e820_ram(size);
        let total: u64 = map.iter().map(|(_, s)| s).sum();
        assert_eq!(total, size - (HIMEM_START - EBDA_START));
        let big = e820_ram(5 << 30);
        assert_eq!(big.last().unwrap().0, MMIO_GAP_END);
    }

    #[test]
    fn non_elf_kernel_is_refused() {
        let mem = memory::create(32).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"MZ this is a bzImage or garbage").unwrap();
        let err = load_kernel(&mem, f.path()).unwrap_err();
        assert!(matches!(err, BootError::NotElf(_)), "{err}");
    }

    #[test]
    fn missing_kernel_is_named() {
        let mem = memory::create(32).unwrap();
        let err = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
    }

    #[test]
    fn initrd_too_big_is_refused() {
        let mem = memory::create(16).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0u8; 15 << 20]).unwrap();
        let err = load_initrd(&mem, f.path(), 8 << 20).unwrap_err();
        assert!(matches!(err, BootError::NoRoomForInitrd { .. }), "{err}");
    }

    #[test]
    fn initrd_lands_page_aligned_at_the_top() {
        let mem = memory::create(32).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![7u8; 5000]).unwrap();
        let initrd = load_initrd(&mem, f.path(), 2 << 20).unwrap();
        assert_eq!(initrd.addr.0 & 0xfff, 0);
        assert!(initrd.addr.0 + 5000 <= 32 << 20);
        let b: u8 = mem.read_obj(initrd.addr).unwrap();
        assert_eq!(b, 7);
    }

    #[test]
    fn cmdline_rejects_overlong() {
        let long = vec!["x".repeat(3000)];
        assert!(matches!(cmdline(&long), Err(BootError::Cmdline(_))));
    }
}
