//! `kennel-vmm`: boots one microVM and runs it until the guest stops.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vmm::config::{Console, DiskConfig, NetConfig, VmConfig, VsockConfig};
use vmm::devices::StopReason;
use vmm::profile::Profile;
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
    /// virtio-net on a tap: `tap=NAME,mac=02:00:00:00:00:01` (repeatable; eth0, eth1, ...).
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
    match cli.command {
        Command::Run(args) => match run(args, started) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("kennel-vmm: {e:#}");
                ExitCode::FAILURE
            }
        },
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
        cfg.console = match c.as_str() {
            "stdout" => Console::Stdout,
            "none" => Console::None,
            path => Console::File(path.into()),
        };
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

fn run(args: RunArgs, started: Instant) -> anyhow::Result<ExitCode> {
    let cfg = config_from(&args)?;
    let vm = Vm::boot(&cfg, started)?;
    if let Some(path) = &cfg.api_socket {
        vmm::api::serve(path, vm.control())
            .with_context(|| format!("cannot serve the control API on {}", path.display()))?;
    }
    tracing::info!(
        "booting {} ({} MiB, {} vCPU, {:?} profile)",
        cfg.kernel.display(),
        cfg.mem_mib,
        cfg.vcpus,
        vm.profile
    );
    tracing::debug!("kernel command line: {}", vm.cmdline);
    let reason = vm.wait(args.timeout.map(Duration::from_secs));
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
