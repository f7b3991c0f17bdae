//! Building and running a VM. `Vm::boot` turns a `VmConfig` into running vCPUs, in this order:
//! open KVM → create the VM (TSS, in-kernel irqchip and PIT) → guest memory → kernel, initrd,
//! command line and zero page → boot page tables and MP table → devices → vCPUs (CPUID,
//! registers) → vCPU threads.

use crate::boot::{self, BootError};
use crate::bus::{Bus, BusError, SharedDevice};
use crate::config::{Console, VmConfig};
use crate::cpuid::{self, CpuidError};
use crate::devices::i8042::{self, I8042};
use crate::devices::marker::{Marker, Marks};
use crate::devices::serial::{self, ConsoleSink, SerialConsole};
use crate::devices::{StopReason, StopSender};
use crate::layout::{
    KVM_TSS_ADDRESS, MARKER_ADDR, MARKER_SIZE, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};
use crate::memory::{self, GuestMemoryMmap, MemoryError};
use crate::mptable::{self, MptableError};
use crate::profile::Profile;
use crate::regs::{self, RegsError};
use crate::vcpu::{self, VcpuContext, VcpuControl};
use crate::virtio::block::{Block, BlockHandle, Disk, DiskError};
use crate::virtio::mmio::{MmioTransport, NOTIFY_OFFSET};
use crate::virtio::vsock::{Vsock, VsockError};
use crate::virtio::VirtioDevice;
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::IoEventAddress;
use kvm_ioctls::{Kvm, VmFd};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

/// Errors building a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is absent.
    #[error("/dev/kvm does not exist: this host has no KVM (load kvm_intel/kvm_amd or enable nested virtualisation)")]
    NoKvm,
    /// /dev/kvm cannot be opened by this user.
    #[error("no permission to open /dev/kvm (run as root or join the kvm group)")]
    KvmPermission,
    /// Another KVM failure.
    #[error("KVM: {what}")]
    Kvm {
        /// Operation.
        what: &'static str,
        /// Cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Configuration out of range.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initrd or command line.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// vCPU registers.
    #[error(transparent)]
    Regs(#[from] RegsError),
    /// CPUID.
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] MptableError),
    /// Device layout.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The console file cannot be opened.
    #[error("cannot open console file {path}")]
    Console {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A disk image cannot be attached.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The vsock device cannot be created.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// An eventfd or thread could not be created.
    #[error("cannot create {0}")]
    Resource(&'static str, #[source] std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A VM whose vCPUs are running.
pub struct Vm {
    _vm: VmFd,
    _mem: GuestMemoryMmap,
    stop_rx: Receiver<StopReason>,
    stop_tx: StopSender,
    stopping: Arc<AtomicBool>,
    console: Arc<Mutex<SerialConsole>>,
    marks: Marks,
    /// Handles on the virtio-blk slots, in order.
    pub disks: Vec<BlockHandle>,
    vcpu_control: Arc<VcpuControl>,
    vcpu_count: usize,
    started: Instant,
    /// The profile the VM was booted with (resolved).
    pub profile: Profile,
    /// The full kernel command line.
    pub cmdline: String,
}

impl Vm {
    /// Boots `config`. `started` is when the VMM process started (for the timing figures).
    pub fn boot(config: &VmConfig, started: Instant) -> Result<Vm, VmError> {
        config.validate()?;
        let profile = config.profile.resolve();
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("set TSS address"))?;
        vm.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("create PIT"))?;

        let mem = memory::create(config.mem_mib)?;
        memory::register(&vm, &mem)?;

        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, path, kernel.end)?),
            None => None,
        };
        let (stop_tx, stop_rx) = channel();
        let marks = Marks::default();
        let (pio, mut mmio, console) = devices(&vm, config, started, &stop_tx, &marks)?;
        let (disks, virtio_args) = virtio_devices(&vm, &mem, config, &mut mmio)?;
        let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));

        let mut args = profile.kernel_args();
        args.extend(virtio_args);
        args.extend(config.cmdline.iter().cloned());
        let cmdline = boot::cmdline(&args)?;
        boot::write_boot_params(&mem, &cmdline, initrd)?;
        regs::write_boot_tables(&mem)?;
        mptable::write(&mem, config.vcpus)?;

        let template = cpuid::supported(&kvm)?;
        let stopping = Arc::new(AtomicBool::new(false));
        vcpu::install_kick_handler().map_err(|e| VmError::Resource("vCPU kick signal", e))?;
        let vcpu_control = Arc::new(VcpuControl::default());
        for id in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("create vCPU"))?;
            fd.set_cpuid2(&cpuid::for_vcpu(&template, id, config.vcpus, profile))
                .map_err(kvm_err("set CPUID"))?;
            regs::setup_vcpu(&fd, kernel.entry)?;
            let ctx = VcpuContext {
                id,
                pio: pio.clone(),
                mmio: mmio.clone(),
                stop: stop_tx.clone(),
                stopping: stopping.clone(),
                started,
                control: vcpu_control.clone(),
            };
            std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu::run(fd, ctx))
                .map_err(|e| VmError::Resource("vCPU thread", e))?;
        }
        let cmdline = cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Vm {
            _vm: vm,
            _mem: mem,
            stop_rx,
            stop_tx,
            stopping,
            console,
            marks,
            disks,
            vcpu_control,
            vcpu_count: usize::from(config.vcpus),
            started,
            profile,
            cmdline,
        })
    }

    /// A handle that stops the VM from another thread (e.g. a signal handler thread).
    pub fn stopper(&self) -> StopSender {
        self.stop_tx.clone()
    }

    /// Waits until the VM stops or `timeout` passes; then halts the vCPUs' loops and flushes
    /// the console.
    pub fn wait(&self, timeout: Option<Duration>) -> StopReason {
        let reason = match timeout {
            Some(t) => match self.stop_rx.recv_timeout(t) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => StopReason::Timeout(t.as_secs()),
                Err(RecvTimeoutError::Disconnected) => StopReason::Error("vCPUs vanished".into()),
            },
            None => self
                .stop_rx
                .recv()
                .unwrap_or_else(|_| StopReason::Error("vCPUs vanished".into())),
        };
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
        reason
    }

    /// What the control API acts on.
    pub fn control(&self) -> crate::api::Control {
        crate::api::Control {
            disks: self.disks.clone(),
            vcpus: self.vcpu_control.clone(),
            vcpu_count: self.vcpu_count,
            stop: self.stop_tx.clone(),
            started: self.started,
        }
    }

    /// Boot markers the guest wrote so far.
    pub fn marks(&self) -> Vec<(u8, Duration)> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        _ => VmError::Kvm {
            what: "open /dev/kvm",
            source: e,
        },
    })
}

type Devices = (Bus, Bus, Arc<Mutex<SerialConsole>>);

fn devices(
    vm: &VmFd,
    config: &VmConfig,
    started: Instant,
    stop: &StopSender,
    marks: &Marks,
) -> Result<Devices, VmError> {
    let sink: ConsoleSink = match &config.console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::None => Box::new(std::io::sink()),
        Console::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| VmError::Console {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
    };
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Resource("eventfd", e))?;
    vm.register_irqfd(&irq, serial::IRQ)
        .map_err(kvm_err("register serial irqfd"))?;
    let console = Arc::new(Mutex::new(SerialConsole::new(irq, sink)));

    let mut pio = Bus::new();
    pio.insert(serial::PORT_BASE, serial::PORT_LEN, console.clone())?;
    let i8042: SharedDevice = Arc::new(Mutex::new(I8042::new(stop.clone())));
    pio.insert(i8042::PORT_BASE, i8042::PORT_LEN, i8042)?;

    let mut mmio = Bus::new();
    let marker: SharedDevice = Arc::new(Mutex::new(Marker::new(started, marks.clone())));
    mmio.insert(MARKER_ADDR, MARKER_SIZE, marker)?;
    Ok((pio, mmio, console))
}

/// Creates the virtio devices (disks, then vsock) on consecutive MMIO windows and interrupt
/// lines, with an irqfd and per-queue ioeventfds each. Returns the disk handles and the
/// `virtio_mmio.device=` kernel arguments that announce them.
fn virtio_devices(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    mmio: &mut Bus,
) -> Result<(Vec<BlockHandle>, Vec<String>), VmError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut handles = Vec::new();
    for d in &config.disks {
        let disk = match &d.path {
            Some(path) => Disk::open(path, d.read_only, &d.serial)?,
            None => Disk::empty(d.read_only),
        };
        let block = Block::new(disk);
        handles.push(block.handle());
        devices.push(Box::new(block));
    }
    if let Some(v) = &config.vsock {
        devices.push(Box::new(Vsock::new(v.cid, &v.socket)?));
    }
    let mut args = Vec::new();
    for (i, device) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = VIRTIO_IRQ_BASE + i as u32;
        let irqfd =
            EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Resource("eventfd", e))?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(kvm_err("register virtio irqfd"))?;
        let transport = MmioTransport::new(device, mem.clone(), irqfd)
            .map_err(|e| VmError::Resource("virtio queue", e))?;
        for (q, fd) in transport.notify_fds().iter().enumerate() {
            vm.register_ioevent(fd, &IoEventAddress::Mmio(base + NOTIFY_OFFSET), q as u32)
                .map_err(kvm_err("register virtio ioeventfd"))?;
        }
        mmio.insert(base, VIRTIO_MMIO_SIZE, Arc::new(Mutex::new(transport)))?;
        args.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
    }
    Ok((handles, args))
}
