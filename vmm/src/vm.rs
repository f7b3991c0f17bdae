//! Building and running a VM.
//!
//! `Vm::boot` turns a `VmConfig` into running vCPUs, in this order: open KVM → create the VM
//! (TSS, in-kernel irqchip and PIT) → guest memory → kernel and initrd → legacy devices and
//! virtio devices (their `virtio_mmio.device=` arguments) → command line and zero page → boot
//! page tables and MP table → vCPUs (CPUID, registers) → vCPU threads.
//!
//! `Vm::restore` does the same from a snapshot: memory is the snapshot's file mapped
//! copy-on-write, devices and vCPUs take their saved state, then the in-kernel irqchip, PIT and
//! clock are loaded before the vCPU threads start.

use crate::boot::{self, BootError};
use crate::bus::{Bus, BusError, SharedDevice};
use crate::config::{Console, DiskConfig, NetConfig, VmConfig, VsockConfig};
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
use crate::snapshot::{self, SnapshotError, Snapshotter};
use crate::vcpu::{self, VcpuContext, VcpuControl};
use crate::virtio::block::{Block, BlockHandle, Disk, DiskError};
use crate::virtio::mmio::{MmioTransport, TransportState, NOTIFY_OFFSET};
use crate::virtio::net::{Net, NetError};
use crate::virtio::vsock::{Vsock, VsockError};
use crate::virtio::VirtioDevice;
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use std::path::PathBuf;
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
    /// A disk image cannot be attached.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The vsock device cannot be created.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// A net device cannot be created (tap missing or busy, bad MAC).
    #[error(transparent)]
    Net(#[from] NetError),
    /// The snapshot cannot be read or does not fit.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The console file cannot be opened.
    #[error("cannot open console file {path}")]
    Console {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A seccomp filter cannot be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// An eventfd, queue or thread could not be created.
    #[error("cannot create {0}")]
    Resource(&'static str, #[source] std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// How to restore a snapshot: the snapshot, and the new VM's own identity and devices.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// Snapshot directory.
    pub snapshot: PathBuf,
    /// If given, the snapshot must have been taken with this kernel.
    pub kernel: Option<PathBuf>,
    /// Disk slots; same count and order as when the snapshot was taken.
    pub disks: Vec<DiskConfig>,
    /// Backends for the snapshot's NICs, in order (the pod's taps); NICs beyond these stay
    /// unplugged. More than the snapshot has is refused.
    pub net: Vec<NetConfig>,
    /// vsock (a new CID and socket for this VM).
    pub vsock: Option<VsockConfig>,
    /// Console destination.
    pub console: Console,
}

/// A VM whose vCPUs are running.
pub struct Vm {
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    stop_rx: Receiver<StopReason>,
    stop_tx: StopSender,
    stopping: Arc<AtomicBool>,
    console: Arc<Mutex<SerialConsole>>,
    marks: Marks,
    /// Handles on the virtio-blk slots, in order.
    pub disks: Vec<BlockHandle>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    vcpu_control: Arc<VcpuControl>,
    vcpu_count: usize,
    started: Instant,
    msrs: Vec<u32>,
    kernel: snapshot::KernelIdentity,
    mem_mib: u64,
    /// The profile the VM was booted with (resolved).
    pub profile: Profile,
    /// The full kernel command line.
    pub cmdline: String,
}

/// Devices shared by boot and restore.
struct Devices {
    pio: Bus,
    mmio: Bus,
    console: Arc<Mutex<SerialConsole>>,
    disks: Vec<BlockHandle>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    virtio_args: Vec<String>,
}

impl Vm {
    /// Boots `config`. `started` is when the VMM process started (for the timing figures).
    pub fn boot(config: &VmConfig, started: Instant) -> Result<Vm, VmError> {
        config.validate()?;
        let profile = config.profile.resolve();
        let kvm = open_kvm()?;
        let vm = create_vm(&kvm)?;
        let mem = memory::create(config.mem_mib)?;
        memory::register(&vm, &mem)?;

        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, path, kernel.end)?),
            None => None,
        };
        let (stop_tx, stop_rx) = channel();
        let marks = Marks::default();
        let devices = devices(
            &vm,
            &mem,
            DeviceSpec {
                console: &config.console,
                disks: &config.disks,
                net: &config.net,
                vsock: config.vsock.as_ref(),
                serial_state: None,
                transport_states: None,
            },
            started,
            &stop_tx,
            &marks,
        )?;

        let mut args = profile.kernel_args();
        args.extend(devices.virtio_args.iter().cloned());
        args.extend(config.cmdline.iter().cloned());
        let cmdline = boot::cmdline(&args)?;
        boot::write_boot_params(&mem, &cmdline, initrd)?;
        regs::write_boot_tables(&mem)?;
        mptable::write(&mem, config.vcpus)?;

        let template = cpuid::supported(&kvm)?;
        let mut fds = Vec::new();
        for id in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("create vCPU"))?;
            fd.set_cpuid2(&cpuid::for_vcpu(&template, id, config.vcpus, profile))
                .map_err(kvm_err("set CPUID"))?;
            regs::setup_vcpu(&fd, kernel.entry)?;
            fds.push(fd);
        }
        let cmdline = cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let msrs = snapshot::cpu::saveable_msrs(&kvm)?;
        start(Parts {
            vm,
            mem,
            fds,
            devices,
            stop: (stop_tx, stop_rx),
            marks,
            started,
            msrs,
            kernel: snapshot::KernelIdentity::File(config.kernel.clone()),
            mem_mib: config.mem_mib,
            profile,
            cmdline,
        })
    }

    /// Restores a snapshot into a new VM (see the module documentation for the order).
    pub fn restore(config: &RestoreConfig, started: Instant) -> Result<Vm, VmError> {
        let loaded = snapshot::load(&config.snapshot, config.kernel.as_deref())?;
        let state = loaded.state;
        let net = plug_nics(&state.devices, &config.net)?;
        if state.devices.len()
            != config.disks.len() + net.len() + usize::from(config.vsock.is_some())
        {
            return Err(SnapshotError::Invalid(format!(
                "the snapshot has {} virtio devices, this VM asks for {} disks, {} NICs and {} vsock",
                state.devices.len(),
                config.disks.len(),
                net.len(),
                usize::from(config.vsock.is_some())
            ))
            .into());
        }
        let kvm = open_kvm()?;
        let vm = create_vm(&kvm)?;
        let mem = memory::from_snapshot(&loaded.memory, state.mem_mib)?;
        memory::register(&vm, &mem)?;
        let (stop_tx, stop_rx) = channel();
        let marks = Marks::default();
        let serial_state = vm_superio::serial::SerialState::from(&state.serial);
        let devices = devices(
            &vm,
            &mem,
            DeviceSpec {
                console: &config.console,
                disks: &config.disks,
                net: &net,
                vsock: config.vsock.as_ref(),
                serial_state: Some(&serial_state),
                transport_states: Some(&state.devices),
            },
            started,
            &stop_tx,
            &marks,
        )?;
        // VM-wide state first, then the vCPUs (the order Firecracker uses).
        vm.set_pit2(&state.pit).map_err(kvm_err("set PIT"))?;
        // Without KVM_CLOCK_REALTIME the guest clock continues from the snapshot instead of
        // jumping by the time since: a periodic-tick guest would replay every missed tick one by
        // one (minutes of emulated work here). The agent sets the wall clock after restore.
        let mut clock = state.clock;
        clock.flags &= !(kvm_bindings::KVM_CLOCK_REALTIME | kvm_bindings::KVM_CLOCK_HOST_TSC);
        vm.set_clock(&clock).map_err(kvm_err("set clock"))?;
        for chip in &state.irqchips {
            vm.set_irqchip(chip).map_err(kvm_err("set irqchip"))?;
        }
        let mut fds = Vec::new();
        for (id, vcpu) in state.vcpus.iter().enumerate() {
            let fd = vm.create_vcpu(id as u64).map_err(kvm_err("create vCPU"))?;
            snapshot::cpu::restore(&fd, vcpu)?;
            fds.push(fd);
        }
        let msrs = snapshot::cpu::saveable_msrs(&kvm)?;
        let vm = start(Parts {
            vm,
            mem,
            fds,
            devices,
            stop: (stop_tx, stop_rx),
            marks,
            started,
            msrs,
            kernel: snapshot::KernelIdentity::Sha256(state.kernel_sha256),
            mem_mib: state.mem_mib,
            profile: state.profile,
            cmdline: state.cmdline,
        })?;
        // Device workers start after the vCPUs run, so their first interrupts reach a live guest
        // (from a thread under the device-activation filter, which the workers inherit).
        crate::seccomp::run_filtered(crate::seccomp::ThreadKind::Activate, || {
            for (i, t) in vm.transports.iter().enumerate() {
                t.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .finish_restore()
                    .map_err(|e| SnapshotError::Invalid(format!("virtio device {i}: {e}")))?;
            }
            Ok::<(), SnapshotError>(())
        })??;
        Ok(vm)
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
        self.flush_console();
        reason
    }

    /// Why the VM stopped, if it has (without waiting).
    pub fn try_stopped(&self) -> Option<StopReason> {
        self.stop_rx.try_recv().ok()
    }

    /// Flushes the console sink.
    pub fn flush_console(&self) {
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
    }

    /// What the snapshot code needs of this VM.
    pub fn snapshotter(&self) -> Snapshotter {
        Snapshotter {
            vm: self.vm.clone(),
            mem: self.mem.clone(),
            vcpus: self.vcpu_control.clone(),
            vcpu_count: self.vcpu_count,
            transports: self.transports.clone(),
            console: self.console.clone(),
            msrs: self.msrs.clone(),
            kernel: self.kernel.clone(),
            mem_mib: self.mem_mib,
            profile: self.profile,
            cmdline: self.cmdline.clone(),
        }
    }

    /// What the control API acts on.
    pub fn control(&self) -> crate::api::Control {
        crate::api::Control {
            disks: self.disks.clone(),
            vcpus: self.vcpu_control.clone(),
            vcpu_count: self.vcpu_count,
            stop: self.stop_tx.clone(),
            started: self.started,
            snapshotter: self.snapshotter(),
        }
    }

    /// Boot markers the guest wrote so far.
    pub fn marks(&self) -> Vec<(u8, Duration)> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Parts {
    vm: VmFd,
    mem: GuestMemoryMmap,
    fds: Vec<VcpuFd>,
    devices: Devices,
    stop: (StopSender, Receiver<StopReason>),
    marks: Marks,
    started: Instant,
    msrs: Vec<u32>,
    kernel: snapshot::KernelIdentity,
    mem_mib: u64,
    profile: Profile,
    cmdline: String,
}

/// Starts one thread per vCPU and returns the running VM.
fn start(p: Parts) -> Result<Vm, VmError> {
    let stopping = Arc::new(AtomicBool::new(false));
    vcpu::install_kick_handler().map_err(|e| VmError::Resource("vCPU kick signal", e))?;
    let vcpu_control = Arc::new(VcpuControl::default());
    let pio = Arc::new(p.devices.pio);
    let mmio = Arc::new(p.devices.mmio);
    let vcpu_count = p.fds.len();
    for (id, fd) in p.fds.into_iter().enumerate() {
        let ctx = VcpuContext {
            id: id as u8,
            pio: pio.clone(),
            mmio: mmio.clone(),
            stop: p.stop.0.clone(),
            stopping: stopping.clone(),
            started: p.started,
            control: vcpu_control.clone(),
        };
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                // KVM setup is done; no guest instruction runs before the filter is in.
                if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu) {
                    let _ = ctx.stop.send(StopReason::Error(e.chain()));
                    return;
                }
                vcpu::run(fd, ctx)
            })
            .map_err(|e| VmError::Resource("vCPU thread", e))?;
    }
    Ok(Vm {
        vm: Arc::new(p.vm),
        mem: p.mem,
        stop_tx: p.stop.0,
        stop_rx: p.stop.1,
        stopping,
        console: p.devices.console,
        marks: p.marks,
        disks: p.devices.disks,
        transports: p.devices.transports,
        vcpu_control,
        vcpu_count,
        started: p.started,
        msrs: p.msrs,
        kernel: p.kernel,
        mem_mib: p.mem_mib,
        profile: p.profile,
        cmdline: p.cmdline,
    })
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

fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(kvm_err("set TSS address"))?;
    vm.create_irq_chip().map_err(kvm_err("create irqchip"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("create PIT"))?;
    Ok(vm)
}

/// The backends of a snapshot's NICs: the given ones in order, the rest unplugged (with the
/// snapshot's MAC unknown here, the guest keeps the one it read at boot either way).
fn plug_nics(states: &[TransportState], given: &[NetConfig]) -> Result<Vec<NetConfig>, VmError> {
    let nics = states
        .iter()
        .filter(|s| s.device_type == crate::virtio::TYPE_NET)
        .count();
    if given.len() > nics {
        return Err(SnapshotError::Invalid(format!(
            "{} NICs given, the snapshot has {nics}",
            given.len()
        ))
        .into());
    }
    let mut net = given.to_vec();
    net.resize(nics, NetConfig::unplugged(TEMPLATE_MAC));
    Ok(net)
}

/// The MAC of a template's NIC and of a restored NIC without a backend; the agent gives the
/// guest interface the pod's MAC after restore.
pub const TEMPLATE_MAC: &str = "02:00:00:00:00:01";

/// What devices to build, and (on restore) their saved state.
struct DeviceSpec<'a> {
    console: &'a Console,
    disks: &'a [DiskConfig],
    net: &'a [NetConfig],
    vsock: Option<&'a VsockConfig>,
    serial_state: Option<&'a vm_superio::serial::SerialState>,
    transport_states: Option<&'a [TransportState]>,
}

fn devices(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    spec: DeviceSpec<'_>,
    started: Instant,
    stop: &StopSender,
    marks: &Marks,
) -> Result<Devices, VmError> {
    let sink: ConsoleSink = match spec.console {
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
    let console = match spec.serial_state {
        Some(state) => {
            SerialConsole::from_state(state, irq, sink).map_err(SnapshotError::Invalid)?
        }
        None => SerialConsole::new(irq, sink),
    };
    let console = Arc::new(Mutex::new(console));

    let mut pio = Bus::new();
    pio.insert(serial::PORT_BASE, serial::PORT_LEN, console.clone())?;
    let i8042: SharedDevice = Arc::new(Mutex::new(I8042::new(stop.clone())));
    pio.insert(i8042::PORT_BASE, i8042::PORT_LEN, i8042)?;

    let mut mmio = Bus::new();
    let marker: SharedDevice = Arc::new(Mutex::new(Marker::new(started, marks.clone())));
    mmio.insert(MARKER_ADDR, MARKER_SIZE, marker)?;
    let (disks, transports, virtio_args) = virtio_devices(vm, mem, &spec, &mut mmio)?;
    Ok(Devices {
        pio,
        mmio,
        console,
        disks,
        transports,
        virtio_args,
    })
}

type VirtioSet = (
    Vec<BlockHandle>,
    Vec<Arc<Mutex<MmioTransport>>>,
    Vec<String>,
);

/// Creates the virtio devices (disks, then net, then vsock) on consecutive MMIO windows and interrupt
/// lines, with an irqfd and per-queue ioeventfds each. Returns the disk handles, the transports
/// and the `virtio_mmio.device=` kernel arguments that announce them.
fn virtio_devices(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    spec: &DeviceSpec<'_>,
    mmio: &mut Bus,
) -> Result<VirtioSet, VmError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut handles = Vec::new();
    for d in spec.disks {
        let disk = match &d.path {
            Some(path) => Disk::open(path, d.read_only, &d.serial)?,
            None => Disk::empty(d.read_only),
        };
        let block = Block::new(disk);
        handles.push(block.handle());
        devices.push(Box::new(block));
    }
    for n in spec.net {
        devices.push(Box::new(Net::from_config(n)?));
    }
    if let Some(v) = spec.vsock {
        devices.push(Box::new(Vsock::new(v.cid, &v.socket)?));
    }
    let mut args = Vec::new();
    let mut transports = Vec::new();
    for (i, device) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = VIRTIO_IRQ_BASE + i as u32;
        let irqfd =
            EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Resource("eventfd", e))?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(kvm_err("register virtio irqfd"))?;
        let transport = match spec.transport_states {
            Some(states) => MmioTransport::restore(device, mem.clone(), irqfd, &states[i])
                .map_err(|e| SnapshotError::Invalid(format!("virtio device {i}: {e}")))?,
            None => MmioTransport::new(device, mem.clone(), irqfd)
                .map_err(|e| VmError::Resource("virtio queue", e))?,
        };
        for (q, fd) in transport.notify_fds().iter().enumerate() {
            vm.register_ioevent(fd, &IoEventAddress::Mmio(base + NOTIFY_OFFSET), q as u32)
                .map_err(kvm_err("register virtio ioeventfd"))?;
        }
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;
        transports.push(transport);
        args.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
    }
    Ok((handles, transports, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(types: &[u32]) -> Vec<TransportState> {
        types
            .iter()
            .map(|&device_type| TransportState {
                device_type,
                ..TransportState::default()
            })
            .collect()
    }

    #[test]
    fn nics_are_plugged_in_order_and_the_rest_stay_unplugged() {
        let s = states(&[2, crate::virtio::TYPE_NET, crate::virtio::TYPE_NET, 19]);
        let tap = NetConfig::parse("tap=ktap0").unwrap();
        let net = plug_nics(&s, std::slice::from_ref(&tap)).unwrap();
        assert_eq!(net, vec![tap.clone(), NetConfig::unplugged(TEMPLATE_MAC)]);
        assert_eq!(plug_nics(&s, &[]).unwrap().len(), 2);
        let err = plug_nics(&states(&[2, 19]), &[tap]).unwrap_err();
        assert!(
            err.to_string().contains("1 NICs given, the snapshot has 0"),
            "{err}"
        );
    }
}
