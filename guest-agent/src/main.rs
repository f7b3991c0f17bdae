//! kennel-agent: PID 1 of a pod VM. Serves the agent gRPC protocol (agent-proto) over vsock
//! in the guest or over a Unix socket on a host, and runs the pod's containers with
//! namespaces, cgroups and an overlay rootfs.
#![deny(unsafe_code)]

mod cgroup;
mod container;
mod files;
mod forward;
mod oomd;
mod pid1;
mod reaper;
mod sandbox;
mod server;
mod storage;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;

/// Where the gRPC server listens.
#[derive(Debug, Clone, PartialEq)]
enum Listen {
    Vsock(u32),
    Unix(PathBuf),
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if let Some(p) = s.strip_prefix("vsock:") {
        return p
            .parse()
            .map(Listen::Vsock)
            .map_err(|_| format!("bad vsock port {p:?}"));
    }
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("empty unix socket path".into());
        }
        return Ok(Listen::Unix(p.into()));
    }
    Err(format!("{s:?}: expected vsock:<port> or unix:<path>"))
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    /// Guest duties when running as PID 1, host behaviour otherwise.
    Auto,
    /// PID 1 of a VM: early mounts, console logging, reboot on exit.
    Guest,
    /// A process on a host (tests): no early mounts, exit instead of reboot.
    Host,
}

/// kennel-agent: runs a pod's containers inside its VM, driven by the host over gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Listen address: vsock:<port> or unix:<path> [default: vsock:1024 as PID 1].
    #[arg(long, value_parser = parse_listen)]
    listen: Option<Listen>,
    /// Guest (PID 1) or host behaviour.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// Parent cgroup of the containers (a cgroup2 directory, or a name next to cgroup v1
    /// controller mounts such as /sys/fs/cgroup/kennel-test).
    #[arg(long, default_value = "/sys/fs/cgroup/kennel")]
    cgroup_root: PathBuf,
    /// Private state: container plans and overlay writable layers.
    #[arg(long, default_value = "/run/kennel")]
    state_dir: PathBuf,
    /// Directory receiving hostname, hosts and resolv.conf.
    #[arg(long, default_value = "/etc")]
    etc_dir: PathBuf,
    /// Where block devices are listed (with their serial files).
    #[arg(long, default_value = "/sys/block", hide = true)]
    sys_block_dir: PathBuf,
    /// Where block device nodes live.
    #[arg(long, default_value = "/dev", hide = true)]
    dev_dir: PathBuf,
    /// Guest mode: where logs go.
    #[arg(long, default_value = "/dev/console", hide = true)]
    console: PathBuf,
    /// Guest mode: the memory device receiving the "agent ready" byte at the VMM's marker address.
    #[arg(long, default_value = "/dev/mem", hide = true)]
    ready_marker: PathBuf,
    /// Debugging: run this program once the listener is up (e.g. an in-VM self test); as
    /// PID 1 also taken from the boot parameter `kennel_debug_exec=<path>`.
    #[arg(long, hide = true)]
    debug_exec: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) Set up a container and exec its process.
    #[command(hide = true)]
    InitContainer { plan: PathBuf },
    /// (internal) Join a container and exec a process.
    #[command(hide = true)]
    ExecContainer { plan: PathBuf },
}

/// Parses the command line. As PID 1 the kernel passes unknown boot parameters as extra
/// arguments: those are dropped (use `--flag=value` on the kernel command line after `--`).
fn parse_cli() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if std::process::id() == 1 => {
            let kept: Vec<std::ffi::OsString> = args
                .iter()
                .enumerate()
                .filter(|(i, a)| *i == 0 || a.to_string_lossy().starts_with("--"))
                .map(|(_, a)| a.clone())
                .collect();
            eprintln!("kennel-agent: ignoring boot arguments: {}", e.kind());
            Cli::try_parse_from(&kept).unwrap_or_else(|_| Cli::parse_from(&args[..1]))
        }
        Err(e) => e.exit(),
    }
}

fn main() {
    let cli = parse_cli();
    // The helpers must stay single-threaded: dispatch before any runtime exists.
    match &cli.command {
        Some(Command::InitContainer { plan }) => container::helper::run_init(plan),
        Some(Command::ExecContainer { plan }) => container::helper::run_exec(plan),
        None => {}
    }
    let guest = match cli.mode {
        Mode::Auto => std::process::id() == 1,
        Mode::Guest => true,
        Mode::Host => false,
    };
    if guest {
        if let Err(e) = pid1::mount_basics() {
            eprintln!("kennel-agent: {e}");
        }
        pid1::console_logging(&cli.console);
        pid1::leave_rootfs();
        std::panic::set_hook(Box::new(|info| {
            eprintln!("kennel-agent: fatal: {info}");
            pid1::power_off();
        }));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KENNEL_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = rt
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(cli, guest)));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        if guest {
            pid1::power_off();
        }
        std::process::exit(1);
    }
    if guest {
        pid1::power_off();
    }
}

async fn run(cli: Cli, guest: bool) -> Result<()> {
    let reaper = reaper::Reaper::start()?;
    let cgroup_root = cgroup::CgroupRoot::open(&cli.cgroup_root)
        .with_context(|| format!("opening cgroup root {}", cli.cgroup_root.display()))?;
    std::fs::create_dir_all(&cli.state_dir)
        .with_context(|| format!("creating {}", cli.state_dir.display()))?;
    let containers = container::Containers::new(
        container::Config {
            cgroup_root: cgroup_root.clone(),
            state_dir: cli.state_dir.clone(),
            guest_watchdog: guest,
        },
        reaper.clone(),
    );
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel(1);
    let service = server::AgentService {
        containers: containers.clone(),
        sandbox_paths: sandbox::Paths {
            etc: cli.etc_dir.clone(),
            random: "/dev/random".into(),
        },
        block_paths: storage::BlockPaths {
            sys_block: cli.sys_block_dir.clone(),
            dev: cli.dev_dir.clone(),
        },
        volume_roots: files::Roots::under(&cli.state_dir),
        shutdown: shutdown_tx,
    };
    let svc = agent_proto::pb::agent_server::AgentServer::new(service);
    let ready_marker = cli.ready_marker.clone();
    // The kernel hands unknown `name=value` boot parameters to init as environment.
    let debug_program = cli
        .debug_exec
        .clone()
        .or_else(|| std::env::var_os("kennel_debug_exec").map(PathBuf::from));
    let listen = match (cli.listen, guest) {
        (Some(l), _) => l,
        (None, true) => Listen::Vsock(agent_proto::DEFAULT_VSOCK_PORT),
        (None, false) => bail!("--listen is required when not running as PID 1"),
    };
    // Serve until DestroySandbox, then give the reply a moment to leave.
    let stop = async move {
        let _ = shutdown_rx.recv().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let router = tonic::transport::Server::builder().add_service(svc);
    match listen {
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("binding {}", path.display()))?;
            tracing::info!("listening on unix:{}", path.display());
            if guest {
                pid1::signal_ready(&ready_marker);
            }
            debug_exec(debug_program.as_deref(), &reaper);
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, stop)
                .await
                .context("serving")?;
        }
        Listen::Vsock(port) => {
            let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
            let listener = tokio_vsock::VsockListener::bind(addr)
                .with_context(|| format!("binding vsock port {port}"))?;
            tracing::info!("listening on vsock:{port}");
            forward::spawn_vsock();
            if guest {
                pid1::signal_ready(&ready_marker);
            }
            debug_exec(debug_program.as_deref(), &reaper);
            router
                .serve_with_incoming_shutdown(listener.incoming(), stop)
                .await
                .context("serving")?;
        }
    }
    tracing::info!("sandbox destroyed");
    containers.remove_all().await;
    if !guest {
        cgroup_root.remove();
    }
    Ok(())
}

/// Runs `program` (no arguments, the agent's stdio) and logs how it ended.
fn debug_exec(program: Option<&std::path::Path>, reaper: &reaper::Reaper) {
    let Some(program) = program else { return };
    let Ok(prog) = std::ffi::CString::new(program.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let env = [std::ffi::CString::new("PATH=/bin:/sbin").unwrap_or_default()];
    let spec = sys::spawn::SpawnSpec {
        clone_flags: 0,
        program: &prog,
        argv: std::slice::from_ref(&prog),
        env: &env,
        fds: &[(0, 0), (1, 1), (2, 2)],
    };
    match sys::spawn::spawn(&spec) {
        Ok(pid) => {
            let rx = reaper.watch(pid);
            let name = program.display().to_string();
            tokio::spawn(async move {
                let exit = reaper::wait(rx).await;
                tracing::info!("{name} ended: {exit:?}");
            });
        }
        Err(e) => tracing::warn!("running {}: {e}", program.display()),
    }
}
