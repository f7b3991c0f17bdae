//! Snapshots of a paused VM and their restore in a fresh process.
//!
//! A snapshot directory holds `state` (versioned, length- and CRC-checked JSON: vCPUs, in-kernel
//! irqchip/PIT/clock, serial, virtio transports and queue positions, the kernel's hash) and
//! `memory` (guest RAM). A restore maps `memory` copy-on-write (`MAP_PRIVATE`), so pages a guest
//! never writes stay shared by every VM restored from the same snapshot.

pub mod cpu;
pub mod file;
pub mod template;

use crate::devices::serial::SerialConsole;
use crate::memory::GuestMemoryMmap;
use crate::profile::Profile;
use crate::vcpu::VcpuControl;
use crate::virtio::mmio::{MmioTransport, TransportState};
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// First word of a state file.
pub const FORMAT: &str = "KENNEL-SNAPSHOT";
/// Format version this build reads and writes.
pub const VERSION: u32 = 1;

/// Errors saving or restoring snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// File I/O.
    #[error("snapshot file {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Damaged or foreign file.
    #[error("snapshot {path} is corrupt: {why}")]
    Corrupt {
        /// File.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Written by another format version.
    #[error("snapshot format version {found} is not supported (this kennel-vmm reads version {supported})")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version we support.
        supported: u32,
    },
    /// Taken with another kernel.
    #[error("snapshot was taken with kernel {snapshot}, not {expected}")]
    Kernel {
        /// Kernel hash in the snapshot.
        snapshot: String,
        /// Kernel hash expected.
        expected: String,
    },
    /// Inconsistent content or device layout.
    #[error("snapshot does not fit: {0}")]
    Invalid(String),
    /// A KVM call failed.
    #[error("KVM: {what}")]
    Kvm {
        /// Operation.
        what: &'static str,
        /// Cause.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// 8250 UART registers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSnapshot {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable.
    pub interrupt_enable: u8,
    /// Interrupt identification.
    pub interrupt_identification: u8,
    /// Line control.
    pub line_control: u8,
    /// Line status.
    pub line_status: u8,
    /// Modem control.
    pub modem_control: u8,
    /// Modem status.
    pub modem_status: u8,
    /// Scratch.
    pub scratch: u8,
    /// Receive FIFO.
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::serial::SerialState> for SerialSnapshot {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for vm_superio::serial::SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// The whole VM except its memory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    /// SHA-256 of the kernel the VM booted.
    pub kernel_sha256: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Profile the guest booted under.
    pub profile: Profile,
    /// Kernel command line it booted with.
    pub cmdline: String,
    /// vCPUs, by id.
    pub vcpus: Vec<cpu::VcpuState>,
    /// In-kernel PIC (master), PIC (slave), IOAPIC.
    pub irqchips: Vec<kvm_irqchip>,
    /// In-kernel PIT.
    pub pit: kvm_pit_state2,
    /// kvmclock.
    pub clock: kvm_clock_data,
    /// Console UART.
    pub serial: SerialSnapshot,
    /// virtio transports, in MMIO-window order.
    pub devices: Vec<TransportState>,
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, SnapshotError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Which kernel a VM runs: its file (hashed only when a snapshot is taken, to keep boot fast) or
/// the hash a restored VM inherited from its snapshot.
#[derive(Debug, Clone)]
pub enum KernelIdentity {
    /// The kernel file the VM booted.
    File(PathBuf),
    /// SHA-256 from the snapshot the VM was restored from.
    Sha256(String),
}

impl KernelIdentity {
    /// The kernel's SHA-256, hex.
    pub fn sha256(&self) -> Result<String, SnapshotError> {
        match self {
            KernelIdentity::File(path) => file_sha256(path),
            KernelIdentity::Sha256(h) => Ok(h.clone()),
        }
    }
}

/// What a running VM lends the snapshot code.
#[derive(Clone)]
pub struct Snapshotter {
    /// The VM.
    pub vm: Arc<VmFd>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// vCPU pause and capture.
    pub vcpus: Arc<VcpuControl>,
    /// Number of vCPUs.
    pub vcpu_count: usize,
    /// virtio transports in window order.
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// Console.
    pub console: Arc<Mutex<SerialConsole>>,
    /// MSRs to save.
    pub msrs: Vec<u32>,
    /// The kernel.
    pub kernel: KernelIdentity,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Profile.
    pub profile: Profile,
    /// Command line.
    pub cmdline: String,
}

impl Snapshotter {
    /// Saves the paused VM into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SnapshotError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let vcpus = self
            .vcpus
            .capture(self.vcpu_count, self.msrs.clone())
            .map_err(SnapshotError::Invalid)?;
        // Keep every device worker out of guest memory while it is copied.
        let syncs: Vec<_> = self
            .transports
            .iter()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).sync())
            .collect();
        let _quiet: Vec<_> = syncs.iter().map(|s| s.quiesce()).collect();
        let devices = self
            .transports
            .iter()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).state())
            .collect();
        let mut irqchips = Vec::new();
        for chip_id in [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.vm
                .get_irqchip(&mut chip)
                .map_err(|source| SnapshotError::Kvm {
                    what: "get irqchip",
                    source,
                })?;
            irqchips.push(chip);
        }
        let kvm = |what| move |source| SnapshotError::Kvm { what, source };
        let state = VmState {
            kernel_sha256: self.kernel.sha256()?,
            mem_mib: self.mem_mib,
            profile: self.profile,
            cmdline: self.cmdline.clone(),
            vcpus,
            irqchips,
            pit: self.vm.get_pit2().map_err(kvm("get PIT"))?,
            clock: self.vm.get_clock().map_err(kvm("get clock"))?,
            serial: self
                .console
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state()
                .into(),
            devices,
        };
        let (_, mem_path) = file::paths(dir);
        file::write_atomic(&mem_path, |f| write_memory(&self.mem, f))?;
        file::write_state(dir, &state)
    }
}

fn write_memory(mem: &GuestMemoryMmap, f: &mut std::fs::File) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
    for region in mem.iter() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // SAFETY: `host` maps `region.len()` bytes of guest memory that live as long as `mem`;
        // every vCPU and device worker is stopped, so nothing writes it while we read.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, region.len() as usize) };
        out.write_all(bytes)?;
    }
    out.flush()
}

/// A snapshot read back from disk and checked.
pub struct Loaded {
    /// The state.
    pub state: VmState,
    /// The memory file.
    pub memory: PathBuf,
}

/// Reads and checks a snapshot; `kernel` (if given) must be the kernel it was taken with.
pub fn load(dir: &Path, kernel: Option<&Path>) -> Result<Loaded, SnapshotError> {
    let (state_path, mem_path) = file::paths(dir);
    let shown = state_path.display().to_string();
    let bytes = std::fs::read(&state_path).map_err(|source| SnapshotError::Io {
        path: shown.clone(),
        source,
    })?;
    let state = file::decode(&bytes, &shown)?;
    if let Some(kernel) = kernel {
        let expected = file_sha256(kernel)?;
        if expected != state.kernel_sha256 {
            return Err(SnapshotError::Kernel {
                snapshot: state.kernel_sha256,
                expected,
            });
        }
    }
    let len = std::fs::metadata(&mem_path)
        .map_err(|source| SnapshotError::Io {
            path: mem_path.display().to_string(),
            source,
        })?
        .len();
    if len != state.mem_mib << 20 {
        return Err(SnapshotError::Corrupt {
            path: mem_path.display().to_string(),
            why: format!(
                "{len} bytes of memory, the state says {} MiB",
                state.mem_mib
            ),
        });
    }
    if state.vcpus.is_empty() || state.irqchips.len() != 3 {
        return Err(SnapshotError::Invalid("no vCPUs or irqchips".into()));
    }
    Ok(Loaded {
        state,
        memory: mem_path,
    })
}
