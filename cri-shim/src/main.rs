//! `kennel-cri`: the CRI runtime server (RuntimeService + ImageService on a Unix socket), one
//! microVM per pod sandbox.

use anyhow::Context;
use clap::Parser;
use cri_shim::image_service::ImageServiceOptions;
use cri_shim::runtime::{Runtime, RuntimeOptions};
use cri_shim::streaming::StreamingServer;
use cri_shim::vm::VmOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "kennel-cri",
    version,
    about = "kennel's CRI runtime: every pod sandbox is a kennel-vmm microVM"
)]
struct Cli {
    /// CRI Unix socket.
    #[arg(long, default_value = "/run/kennel/cri.sock")]
    socket: PathBuf,
    /// Streaming server address (the URLs Exec/Attach/PortForward return); port 0 picks one.
    /// With `--netns` it is bound inside that namespace, beside the node agent.
    #[arg(long, default_value = "127.0.0.1:0")]
    streaming_listen: std::net::SocketAddr,
    /// State directory (sandbox/container records, pod sockets, IPAM).
    #[arg(long, default_value = "/var/lib/kennel/cri")]
    state_dir: PathBuf,
    /// Log filter (tracing env-filter syntax), e.g. info or cri_shim=debug.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Guest kernel (uncompressed vmlinux).
    #[arg(long)]
    kernel: PathBuf,
    /// Static kennel-agent binary, packed as /init of the guest initramfs.
    #[arg(
        long,
        conflicts_with = "initramfs",
        required_unless_present = "initramfs"
    )]
    agent: Option<PathBuf>,
    /// Ready-made initramfs with kennel-agent as /init (instead of --agent).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// kennel-vmm binary (default: beside this executable, else from PATH).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// Node pod CIDR.
    #[arg(long, default_value = "10.88.0.0/16")]
    pod_cidr: String,
    /// Host bridge for pod taps.
    #[arg(long, default_value = "kennel0")]
    bridge: String,
    /// Image store directory.
    #[arg(long, default_value = "/var/lib/kennel/images")]
    image_store: PathBuf,
    /// Template cache directory.
    #[arg(long, default_value = "/var/cache/kennel/templates")]
    template_cache: PathBuf,
    /// Run the node network and the VMMs inside this named network namespace (tests).
    #[arg(long)]
    netns: Option<String>,
    /// Registry host:port reachable over plain HTTP (repeatable).
    #[arg(long = "plain-http")]
    plain_http: Vec<String>,
    /// Extra CA certificate (PEM) trusted for registries.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
    /// Build the template VMs of these guest memory sizes (MiB) at start-up instead of at the
    /// first pod of each size (repeatable; progress in `<state-dir>/templates.json`).
    #[arg(long)]
    prewarm_mib: Vec<u64>,
    /// Registry mirrors, credentials and CAs (k3s-style `registries.yaml`; see the README).
    #[arg(long)]
    registries_config: Option<PathBuf>,
    /// Empty image disk slots per pod VM (distinct images a pod can use).
    #[arg(long, default_value_t = 4)]
    disk_slots: usize,
    /// Empty read-write disk slots per pod VM for persistent volumes (distinct volume images a
    /// pod can use). Image slots + volume slots + NIC + vsock must fit the VM's virtio slots.
    #[arg(long, default_value_t = 4)]
    volume_slots: usize,
    /// vCPUs per pod VM.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Instead of serving: stop and remove every pod sandbox (VMM, tap, IP, port mappings), tear
    /// down the node network (bridge, NAT table), then exit. `kennel down` runs this.
    #[arg(long)]
    teardown: bool,
}

fn default_vmm() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("kennel-vmm")));
    match beside {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("kennel-vmm"),
    }
}

/// Packs `agent` as /init into `<state>/initramfs-<hash>.cpio` (once per agent binary).
fn pack_initramfs(agent: &Path, state_dir: &Path) -> anyhow::Result<PathBuf> {
    let data = std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in &data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    let path = state_dir.join(format!("initramfs-{h:016x}.cpio"));
    if !path.is_file() {
        std::fs::create_dir_all(state_dir)?;
        let tmp = state_dir.join(format!(".initramfs.tmp{}", std::process::id()));
        images::initramfs::Initramfs::new()
            .init(agent)?
            .write_file(&tmp)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Removes every sandbox, then the node network.
async fn teardown(rt: &Arc<Runtime>) -> anyhow::Result<()> {
    let mut failed = 0;
    for s in rt.state.sandboxes() {
        let r = match rt.stop_pod_sandbox(&s.id).await {
            Ok(()) => rt.remove_pod_sandbox(&s.id).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => println!("removed pod sandbox {}", s.id),
            Err(e) => {
                failed += 1;
                eprintln!("kennel-cri: removing sandbox {}: {e}", s.id);
            }
        }
    }
    match &rt.network {
        Ok(net) => net.teardown().context("tearing down the node network")?,
        Err(why) => eprintln!("kennel-cri: node network was not set up ({why}); nothing to remove"),
    }
    anyhow::ensure!(failed == 0, "{failed} sandbox(es) could not be removed");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kennel-cri: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cri_shim::vm::check_slots(cli.disk_slots, cli.volume_slots)?;
    std::fs::create_dir_all(&cli.state_dir)
        .with_context(|| format!("creating {}", cli.state_dir.display()))?;
    let initramfs = match (&cli.initramfs, &cli.agent) {
        (Some(i), _) => i.clone(),
        (None, Some(a)) => pack_initramfs(a, &cli.state_dir).context("packing the initramfs")?,
        (None, None) => anyhow::bail!("one of --agent and --initramfs is required"),
    };
    let store = Arc::new(
        images::store::Store::open(&cli.image_store)
            .with_context(|| format!("image store {}", cli.image_store.display()))?,
    );
    let opts = RuntimeOptions {
        state_dir: cli.state_dir.clone(),
        vm: VmOptions {
            vmm: cli.vmm.clone().unwrap_or_else(default_vmm),
            kernel: cli.kernel.clone(),
            initramfs,
            template_cache: cli.template_cache.clone(),
            netns: cli.netns.clone(),
            disk_slots: cli.disk_slots,
            volume_slots: cli.volume_slots,
            vcpus: cli.vcpus,
        },
        pod_cidr: cli.pod_cidr.clone(),
        bridge: cli.bridge.clone(),
        netns: cli.netns.clone(),
    };
    let rt = Runtime::new(opts, store).context("starting the runtime")?;
    rt.recover().await;
    if cli.teardown {
        return teardown(&rt).await;
    }
    if !cli.prewarm_mib.is_empty() {
        tokio::spawn(rt.clone().prewarm(cli.prewarm_mib.clone()));
    }
    let image_opts = ImageServiceOptions {
        plain_http: cli.plain_http.clone(),
        extra_ca: cli.registry_ca.clone(),
        registries: match &cli.registries_config {
            Some(p) => cri_shim::registries::Registries::load(p)?,
            None => Default::default(),
        },
    };
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down (pod VMs keep running)");
    };
    let streaming = StreamingServer::bind(
        cli.streaming_listen,
        rt.clone(),
        cli.netns.as_deref().map(netns::NetNs::named),
    )
    .await?;
    let streams = streaming.streams();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(streaming.serve(async move {
        let _ = stop_rx.await;
    }));
    cri_shim::server::serve_with_streaming(rt, image_opts, &cli.socket, Some(streams), shutdown)
        .await?;
    let _ = stop_tx.send(());
    Ok(())
}
