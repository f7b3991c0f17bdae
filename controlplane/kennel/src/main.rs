//! `kennel`: `kennel up` (a whole single-node cluster), and each component as a subcommand.
#![forbid(unsafe_code)]

mod addons;
mod components;
mod down;
mod node_cmd;
mod supervise;
mod svcroute;
mod up;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kennel_apiserver::services::ServiceNetwork;
use kennel_apiserver::{ApiServerConfig, StoreConfig};

#[derive(Parser)]
#[command(name = "kennel", about = "kennel control plane", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node cluster: API server, scheduler, controller manager, kennel-cri and the
    /// node agent, supervised.
    Up(Box<up::UpArgs>),
    /// Run only the node agent against an API server (kubeconfig) and a CRI runtime (socket).
    Node(Box<node_cmd::NodeArgs>),
    /// Stop `kennel up` and remove every pod VM and the node network (objects are kept).
    Down(down::DownArgs),
    /// Run only the scheduler against an API server (kubeconfig).
    Scheduler(Box<components::SchedulerArgs>),
    /// Run only the controller manager (ReplicaSets, Deployments, …) against an API server.
    ControllerManager(Box<components::ControllerArgs>),
    /// Register simulated nodes (no VMs) whose pods turn Running: for control-plane scale tests.
    SimNodes(Box<components::SimArgs>),
    /// Run only the cluster DNS server against an API server.
    Dns(Box<components::DnsArgs>),
    /// Run only the Ingress controller (class `kennel`) against an API server.
    Ingress(Box<components::IngressArgs>),
    /// Run only the service proxy (Services as nftables rules) against an API server.
    Proxy(Box<components::ProxyArgs>),
    /// Run the Kubernetes-compatible API server.
    Apiserver {
        /// State directory (SQLite database, pki, admin.kubeconfig).
        #[arg(long, default_value = "/var/lib/kennel")]
        data_dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Use etcd at these comma-separated client URLs instead of SQLite.
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        /// Serve plain HTTP instead of HTTPS (local testing only).
        #[arg(long)]
        insecure_http: bool,
        /// Accept requests without a bearer token (local testing only).
        #[arg(long)]
        no_auth: bool,
        /// Extra bearer tokens (static token file: `token,user[,uid,"groups"]` per line).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Audit log (JSON lines, one audit.k8s.io/v1 Event per request).
        #[arg(long)]
        audit_log_path: Option<PathBuf>,
        /// Audit policy (audit.k8s.io/v1 Policy; Metadata for every request when unset).
        #[arg(long)]
        audit_policy_file: Option<PathBuf>,
        /// Admission plugins to switch off (`ServiceAccount` when no controller manager runs).
        #[arg(long, value_delimiter = ',')]
        disable_admission_plugins: Vec<String>,
        /// ClusterIPs are allocated from this range.
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cluster_ip_range: ipnet::Ipv4Net,
        /// NodePorts are allocated from this range (`FIRST-LAST`).
        #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
        service_node_port_range: std::ops::RangeInclusive<u16>,
    },
}

/// Parses `FIRST-LAST`.
fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s}: expected FIRST-LAST"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s}: FIRST must be at least 1 and not above LAST"));
    }
    Ok(a..=b)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A network namespace is entered before any thread exists: setns affects only the calling
    // thread, and every runtime thread is spawned from this one afterwards.
    if let Command::Up(a) = &cli.command {
        if let Some(ns) = &a.netns {
            enter_netns(ns)?;
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(cli))
}

fn enter_netns(name: &str) -> anyhow::Result<()> {
    let host = std::fs::File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
    supervise::set_host_netns(host);
    let path = std::path::Path::new("/run/netns").join(name);
    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {name}"))?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Up(args) => up::run(*args).await?,
        Command::Down(args) => down::run(args).await?,
        Command::Node(args) => node_cmd::run(*args).await?,
        Command::Scheduler(args) => components::run_scheduler(*args).await?,
        Command::Proxy(args) => components::run_proxy(*args).await?,
        Command::Dns(args) => components::run_dns(*args).await?,
        Command::Ingress(args) => components::run_ingress(*args).await?,
        Command::ControllerManager(args) => components::run_controllers(*args).await?,
        Command::SimNodes(args) => components::run_sim(*args).await?,
        Command::Apiserver {
            data_dir,
            listen,
            etcd_endpoints,
            insecure_http,
            no_auth,
            token_file,
            audit_log_path,
            audit_policy_file,
            disable_admission_plugins,
            service_cluster_ip_range,
            service_node_port_range,
        } => {
            let store = if etcd_endpoints.is_empty() {
                StoreConfig::Sqlite
            } else {
                StoreConfig::Etcd {
                    endpoints: etcd_endpoints,
                }
            };
            let server = kennel_apiserver::start(ApiServerConfig {
                data_dir,
                listen,
                store,
                tls: !insecure_http,
                auth: !no_auth,
                token_file,
                service_network: ServiceNetwork {
                    cidr: service_cluster_ip_range,
                    node_ports: service_node_port_range,
                    dns_ip: None,
                },
                event_ttl_secs: kennel_apiserver::events_ttl::DEFAULT_TTL.as_secs(),
                audit_log: audit_log_path,
                audit_policy: audit_policy_file,
                disable_admission_plugins,
            })
            .await
            .context("starting the API server")?;
            // A closed stdout must not stop the server.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "listening on {}", server.url);
            let _ = writeln!(out, "kubeconfig: {}", server.kubeconfig.display());
            let _ = out.flush();
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            drop(server);
        }
    }
    Ok(())
}
