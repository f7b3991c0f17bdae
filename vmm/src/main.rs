//! `kennel-vmm`: boots one microVM and runs it until the guest stops.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vmm::config::{Console, DiskConfig, NetConfig, VmConfig, VsockConfig};
use vmm::devices::StopReason;
use vmm::profile::Profile;
use vmm::seccomp::{self, Policy, ThreadKind};
use vmm::vm::Vm;

/// Exit status when `--timeout` ends the VM (as timeout(1)).
const EXIT_TIMEOUT: u8 = 124;

#[derive(Parser)]
#[command(
    name = "kennel-vmm",
    version,
    about = "kennel's KVM microVM monitor: one VM per pod"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM and run it until the guest stops (reset or power-off).
    Run(RunArgs),
    /// Start a VM from a snapshot (memory mapped copy-on-write) and run it.
    Restore(RestoreArgs),
    /// Build, list or remove pod templates (booted once, snapshotted, restored per pod).
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Show the seccomp filters the VMM threads run under.
    Seccomp {
        #[command(subcommand)]
        command: SeccompCommand,
    },
}

#[derive(Subcommand)]
enum SeccompCommand {
    /// Print each thread kind's allowed syscalls (and argument conditions), or its BPF program.
    Print {
        /// Only this thread kind: vcpu, activate, virtio-blk, virtio-net, virtio-vsock, api, main.
        #[arg(long)]
        thread: Option<String>,
        /// Print the compiled BPF instructions (code jt jf k) instead of the rules.
        #[arg(long)]
        bpf: bool,
    },
}

/// Seccomp switches of the modes that run a guest.
#[derive(Args)]
struct SeccompArgs {
    /// Run without seccomp filters (as Firecracker's `--no-seccomp`; for debugging only).
    #[arg(long)]
    no_seccomp: bool,
    /// Kill the VMM on a call outside the filters. Without it such a call is only logged (kernel
    /// audit log, `type=1326`): a shutdown path of a restored VM under vsock load still makes
    /// one call outside the vsock worker's list (see vmm/README.md), so enforcing is opt-in.
    #[arg(long, conflicts_with = "no_seccomp")]
    seccomp_kill: bool,
}

impl SeccompArgs {
    /// Sets the filter policy and `PR_SET_NO_NEW_PRIVS` for this process.
    fn apply(&self) -> anyhow::Result<()> {
        seccomp::set_policy(if self.no_seccomp {
            Policy::Off
        } else if self.seccomp_kill {
            Policy::Kill
        } else {
            Policy::Log
        });
        seccomp::no_new_privs()?;
        if self.no_seccomp {
            tracing::warn!("seccomp filters are off (--no-seccomp)");
        }
        Ok(())
    }
}

#[derive(Args)]
struct RestoreArgs {
    /// Snapshot directory (or a template directory).
    #[arg(long)]
    snapshot: PathBuf,
    /// Refuse the snapshot unless it was taken with this kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Disk slot, as for `run` (same number of slots as the snapshot).
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// Backend of the snapshot's next NIC: `tap=NAME` or `fd=N` (repeatable, in NIC order; NICs
    /// not given stay unplugged). The guest keeps the MAC it had; the agent sets the pod's.
    #[arg(long = "net")]
    net: Vec<String>,
    /// vsock for this VM: `cid=N,socket=PATH` (its own CID).
    #[arg(long)]
    vsock: Option<String>,
    /// Guest console: `stdout`, `none` or a file path.
    #[arg(long)]
    console: Option<String>,
    /// Control API Unix socket.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Stop the VM after this many seconds (exit status 124).
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    seccomp: SeccompArgs,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Boot the guest, wait for its ready marker, snapshot it into the cache; print its path.
    Build(TemplateBuildArgs),
    /// List cached templates.
    List {
        /// Template cache directory.
        #[arg(long, default_value = DEFAULT_TEMPLATE_CACHE)]
        cache: PathBuf,
    },
    /// Remove a cached template.
    Rm {
        /// Template key (from `list`).
        key: String,
        /// Template cache directory.
        #[arg(long, default_value = DEFAULT_TEMPLATE_CACHE)]
        cache: PathBuf,
    },
}

const DEFAULT_TEMPLATE_CACHE: &str = "/var/cache/kennel/templates";

#[derive(Args)]
struct TemplateBuildArgs {
    /// Guest kernel.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs whose init writes the ready marker.
    #[arg(long)]
    initrd: PathBuf,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    mem: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Empty disk slot: `empty,ro` or `empty` (repeatable).
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// Unplugged NICs (eth0, ...) that a restore plugs into the pod's taps.
    #[arg(long, default_value_t = 1)]
    nics: u8,
    /// Marker value that means "ready" (2 = kennel-agent ready).
    #[arg(long, default_value_t = vmm::devices::marker::MARK_AGENT_READY)]
    marker: u8,
    /// Extra kernel argument (repeatable).
    #[arg(long = "cmdline", allow_hyphen_values = true)]
    cmdline: Vec<String>,
    /// Host profile.
    #[arg(long, value_enum, default_value = "auto")]
    profile: Profile,
    /// Template cache directory.
    #[arg(long, default_value = DEFAULT_TEMPLATE_CACHE)]
    cache: PathBuf,
    /// Give up if the guest is not ready after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    #[command(flatten)]
    seccomp: SeccompArgs,
}

#[derive(Args)]
struct RunArgs {
    /// JSON VM configuration (fields of VmConfig); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Uncompressed ELF vmlinux.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs (newc cpio).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Guest RAM in MiB (the pod's hard memory limit).
    #[arg(long)]
    mem: Option<u64>,
    /// Number of vCPUs.
    #[arg(long)]
    vcpus: Option<u8>,
    /// Extra kernel argument (repeatable; a value with spaces is split).
    #[arg(long = "cmdline", allow_hyphen_values = true)]
    cmdline: Vec<String>,
    /// Guest console: `stdout`, `none` or a file path.
    #[arg(long)]
    console: Option<String>,
    /// Host profile: auto (detect), full, or compat (nested emulating KVM).
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// virtio-blk slot: `path=FILE,ro,serial=ID` or `empty,ro` (repeatable; vda, vdb, ...).
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// virtio-net on a tap: `tap=NAME,mac=02:00:00:00:00:01`, or `fd=N` for an inherited tap
    /// descriptor (repeatable; eth0, eth1, ...).
    #[arg(long = "net")]
    net: Vec<String>,
    /// virtio-vsock: `cid=N,socket=PATH` (host connects with `CONNECT <port>`).
    #[arg(long)]
    vsock: Option<String>,
    /// Control API Unix socket (JSON requests, one per line).
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Stop the VM after this many seconds (exit status 124).
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    seccomp: SeccompArgs,
}

fn main() -> ExitCode {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args, started),
        Command::Restore(args) => restore(args, started),
        Command::Template { command } => template(command),
        Command::Seccomp { command } => seccomp_command(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kennel-vmm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_from(args: &RunArgs) -> anyhow::Result<VmConfig> {
    let mut cfg = match &args.config {
        Some(path) => VmConfig::from_file(path)?,
        None => VmConfig {
            kernel: args
                .kernel
                .clone()
                .context("--kernel (or --config) is required")?,
            initrd: None,
            cmdline: vec![],
            mem_mib: 128,
            vcpus: 1,
            console: Console::Stdout,
            profile: Profile::Auto,
            disks: vec![],
            net: vec![],
            vsock: None,
            api_socket: None,
        },
    };
    if let Some(k) = &args.kernel {
        cfg.kernel = k.clone();
    }
    if let Some(i) = &args.initrd {
        cfg.initrd = Some(i.clone());
    }
    if let Some(m) = args.mem {
        cfg.mem_mib = m;
    }
    if let Some(v) = args.vcpus {
        cfg.vcpus = v;
    }
    cfg.cmdline.extend(
        args.cmdline
            .iter()
            .flat_map(|a| a.split_whitespace().map(str::to_string)),
    );
    if let Some(c) = &args.console {
        cfg.console = console_from(c);
    }
    if let Some(p) = args.profile {
        cfg.profile = p;
    }
    for spec in &args.disks {
        cfg.disks.push(DiskConfig::parse(spec)?);
    }
    for spec in &args.net {
        cfg.net.push(NetConfig::parse(spec)?);
    }
    if let Some(spec) = &args.vsock {
        cfg.vsock = Some(VsockConfig::parse(spec)?);
    }
    if let Some(p) = &args.api_socket {
        cfg.api_socket = Some(p.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

fn console_from(spec: &str) -> Console {
    match spec {
        "stdout" => Console::Stdout,
        "none" => Console::None,
        path => Console::File(path.into()),
    }
}

fn restore(args: RestoreArgs, started: Instant) -> anyhow::Result<ExitCode> {
    args.seccomp.apply()?;
    let config = vmm::vm::RestoreConfig {
        snapshot: args.snapshot.clone(),
        kernel: args.kernel.clone(),
        disks: args
            .disks
            .iter()
            .map(|d| DiskConfig::parse(d))
            .collect::<Result<_, _>>()?,
        net: args
            .net
            .iter()
            .map(|n| NetConfig::parse(n))
            .collect::<Result<_, _>>()?,
        vsock: args.vsock.as_deref().map(VsockConfig::parse).transpose()?,
        console: args
            .console
            .as_deref()
            .map(console_from)
            .unwrap_or_default(),
    };
    let vm = Vm::restore(&config, started)?;
    tracing::info!(
        "restored {} in {:.3} ms",
        args.snapshot.display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    serve_and_wait(&vm, args.api_socket.as_deref(), args.timeout, started)
}

fn template(command: TemplateCommand) -> anyhow::Result<ExitCode> {
    use vmm::snapshot::template;
    match command {
        TemplateCommand::Build(a) => {
            // The vCPU threads and device workers run filtered; this thread builds, waits and
            // writes the snapshot.
            a.seccomp.apply()?;
            let spec = template::TemplateSpec {
                kernel: a.kernel,
                initrd: a.initrd,
                mem_mib: a.mem,
                vcpus: a.vcpus,
                disks: a
                    .disks
                    .iter()
                    .map(|d| DiskConfig::parse(d))
                    .collect::<Result<_, _>>()?,
                nics: a.nics,
                ready_marker: a.marker,
                cmdline: a
                    .cmdline
                    .iter()
                    .flat_map(|c| c.split_whitespace().map(str::to_string))
                    .collect(),
                profile: a.profile,
            };
            let dir = template::ensure(&spec, &a.cache, Duration::from_secs(a.timeout))?;
            println!("{}", dir.display());
        }
        TemplateCommand::List { cache } => {
            for t in template::list(&cache)? {
                println!(
                    "{}  {} MiB  {} vCPU  {} disk slot(s)  cold boot {:.1} s  kernel {}  initrd {}",
                    t.key,
                    t.spec.mem_mib,
                    t.spec.vcpus,
                    t.spec.disks.len(),
                    t.boot_seconds,
                    t.spec.kernel.display(),
                    t.spec.initrd.display()
                );
            }
        }
        TemplateCommand::Rm { key, cache } => template::remove(&cache, &key)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs, started: Instant) -> anyhow::Result<ExitCode> {
    let cfg = config_from(&args)?;
    args.seccomp.apply()?;
    let vm = Vm::boot(&cfg, started)?;
    tracing::info!(
        "booting {} ({} MiB, {} vCPU, {:?} profile)",
        cfg.kernel.display(),
        cfg.mem_mib,
        cfg.vcpus,
        vm.profile
    );
    tracing::debug!("kernel command line: {}", vm.cmdline);
    serve_and_wait(&vm, cfg.api_socket.as_deref(), args.timeout, started)
}

fn serve_and_wait(
    vm: &Vm,
    api_socket: Option<&std::path::Path>,
    timeout: Option<u64>,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = api_socket {
        vmm::api::serve(path, vm.control())
            .with_context(|| format!("cannot serve the control API on {}", path.display()))?;
    }
    // Every other thread runs under its own filter already; this one only waits from now on.
    seccomp::install(ThreadKind::Main)?;
    let reason = vm.wait(timeout.map(Duration::from_secs));
    let secs = started.elapsed().as_secs_f64();
    let code = match &reason {
        StopReason::Reset => {
            eprintln!("kennel-vmm: guest stopped (reset) after {secs:.3} s");
            ExitCode::SUCCESS
        }
        StopReason::PowerOff => {
            eprintln!("kennel-vmm: guest powered off after {secs:.3} s");
            ExitCode::SUCCESS
        }
        StopReason::TripleFault => {
            eprintln!(
                "kennel-vmm: guest triple-faulted (reboot=t reset or crash) after {secs:.3} s"
            );
            ExitCode::SUCCESS
        }
        StopReason::Host(why) => {
            eprintln!("kennel-vmm: stopped by host: {why}");
            ExitCode::SUCCESS
        }
        StopReason::Timeout(secs) => {
            eprintln!("kennel-vmm: stopped after the {secs} s timeout");
            ExitCode::from(EXIT_TIMEOUT)
        }
        StopReason::Error(why) => {
            eprintln!("kennel-vmm: guest failed: {why}");
            ExitCode::FAILURE
        }
    };
    // The vCPU threads may still sit in KVM_RUN; the process exit ends them.
    Ok(code)
}

fn seccomp_command(command: SeccompCommand) -> anyhow::Result<ExitCode> {
    let SeccompCommand::Print { thread, bpf } = command;
    let kinds = match thread.as_deref() {
        None => ThreadKind::ALL.to_vec(),
        Some(name) => vec![ThreadKind::from_name(name).with_context(|| {
            let names: Vec<_> = ThreadKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "unknown thread kind {name:?} (one of: {})",
                names.join(", ")
            )
        })?],
    };
    for kind in kinds {
        if !bpf {
            println!("{}", seccomp::describe(kind));
            continue;
        }
        for (i, prog) in seccomp::programs(kind, Policy::Kill)?.iter().enumerate() {
            println!("# {kind} program {i}: {} instructions", prog.len());
            for ins in prog {
                println!(
                    "{:#06x} {:3} {:3} {:#010x}",
                    ins.code, ins.jt, ins.jf, ins.k
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
