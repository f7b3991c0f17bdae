//! The scheduler, the controller manager and simulated nodes: as supervised tasks inside
//! `kennel up`, and alone as `kennel scheduler`, `kennel controller-manager`, `kennel sim-nodes`
//! (each a kube-rs client of the API server named by a kubeconfig, like any other client).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::supervise;

/// Where a standalone component finds the API server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Kubeconfig of the cluster (default: /etc/kennel/admin.kubeconfig).
    #[arg(long, default_value = "/etc/kennel/admin.kubeconfig")]
    pub kubeconfig: PathBuf,
}

impl ClientArgs {
    async fn config(&self) -> anyhow::Result<kube::Config> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .with_context(|| format!("using {}", self.kubeconfig.display()))
    }
}

/// `kennel scheduler` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The `spec.schedulerName` served.
    #[arg(long, default_value = "default-scheduler")]
    scheduler_name: String,
    /// Schedule without holding the `kube-system/kube-scheduler` Lease (one instance only).
    #[arg(long)]
    no_leader_elect: bool,
    /// Lease holder identity (default: host name and pid).
    #[arg(long)]
    identity: Option<String>,
}

/// `kennel controller-manager` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Run without holding the `kube-system/kube-controller-manager` Lease (one instance only).
    #[arg(long)]
    no_leader_elect: bool,
    /// Lease holder identity (default: host name and pid).
    #[arg(long)]
    identity: Option<String>,
}

/// `kennel sim-nodes` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Node names are `<prefix><index>`.
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// Pods capacity of each node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Extra node labels, `key=value` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Milliseconds from binding to Running and Ready.
    #[arg(long, default_value_t = 1000)]
    ready_delay_ms: u64,
}

/// `kennel proxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// This node's name (endpoints on it are local for the `Local` traffic policies).
    #[arg(long)]
    node_name: String,
    /// Addresses NodePorts and LoadBalancer ports are served on (comma-separated).
    #[arg(long, value_delimiter = ',')]
    node_ip: Vec<std::net::Ipv4Addr>,
    /// The pod CIDR (service traffic from outside it is masqueraded).
    #[arg(long)]
    cluster_cidr: Option<kennel_proxy::Ipv4Net>,
    /// Program this named network namespace instead of the current one.
    #[arg(long)]
    netns: Option<String>,
    /// Remove the proxy's nftables table and exit.
    #[arg(long)]
    cleanup: bool,
}

/// `kennel dns` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Addresses to serve on, UDP and TCP (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:53")]
    listen: Vec<std::net::SocketAddr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Resolvers for other names (default: the nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',')]
    upstream: Vec<std::net::SocketAddr>,
}

/// `kennel ingress` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct IngressArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Plain HTTP listener ("none" for none).
    #[arg(long, default_value = "0.0.0.0:80")]
    http_listen: String,
    /// TLS listener ("none" for none).
    #[arg(long, default_value = "0.0.0.0:443")]
    https_listen: String,
    /// Addresses written to `status.loadBalancer.ingress` of served Ingresses (comma-separated).
    #[arg(long, value_delimiter = ',')]
    node_ip: Vec<std::net::IpAddr>,
}

/// Parses a listener flag: an address, or `none`.
pub fn listener(flag: &str, value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if value == "none" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("{flag} {value}: expected ADDRESS:PORT or none"))
}

fn identity(given: &Option<String>) -> String {
    given.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "kennel".into());
        format!("{host}_{}", std::process::id())
    })
}

/// A component as a supervised task of `kennel up`: `run` is started again (with back-off)
/// whenever it ends, each time with a fresh client.
fn spawn_component<F, Fut>(
    name: &'static str,
    client_cfg: kube::Config,
    stop: watch::Receiver<bool>,
    run: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(kube::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    tokio::spawn(supervise::task(name, stop, move || {
        let client = kube::Client::try_from(client_cfg.clone()).map_err(|e| e.to_string());
        let started = client.map(&run);
        async move { started?.await }
    }))
}

/// Formats a component's error with its causes.
fn chain(e: impl Into<anyhow::Error>) -> String {
    format!("{:#}", e.into())
}

/// The scheduler as a supervised task of `kennel up` (a stable identity: a rerun after a crash
/// takes its own Lease back at once instead of waiting for it to expire).
pub fn spawn_scheduler(
    client_cfg: kube::Config,
    node: &str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let cfg = kennel_scheduler::SchedulerConfig {
        identity: format!("kennel-up-{node}"),
        ..Default::default()
    };
    spawn_component("scheduler", client_cfg, stop, move |client| {
        let cfg = cfg.clone();
        async move { kennel_scheduler::run(cfg, client).await.map_err(chain) }
    })
}

/// The controller manager as a supervised task of `kennel up`.
pub fn spawn_controllers(
    client_cfg: kube::Config,
    node: &str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let cfg = kennel_controllers::ControllerConfig {
        identity: format!("kennel-up-{node}"),
        leader_elect: true,
        root_ca_pem: kennel_controllers::rootca::ca_pem_from(&client_cfg),
    };
    spawn_component("controller manager", client_cfg, stop, move |client| {
        let cfg = cfg.clone();
        async move { kennel_controllers::run(cfg, client).await.map_err(chain) }
    })
}

/// The cluster's own objects (kube-dns, the `kubernetes` endpoints, the IngressClass) kept in
/// place.
pub fn spawn_addons(
    client_cfg: kube::Config,
    spec: crate::addons::AddonSpec,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_component("cluster addons", client_cfg, stop, move |client| {
        crate::addons::run(client, spec.clone())
    })
}

/// kennel-dns as a supervised task.
pub fn spawn_dns(
    client_cfg: kube::Config,
    cfg: kennel_dns::DnsConfig,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_component("cluster DNS", client_cfg, stop, move |client| {
        let cfg = cfg.clone();
        async move { kennel_dns::run(cfg, client).await.map_err(chain) }
    })
}

/// kennel-proxy as a supervised task (its rules stay while it restarts).
pub fn spawn_proxy(
    client_cfg: kube::Config,
    cfg: kennel_proxy::ProxyConfig,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_component("service proxy", client_cfg, stop, move |client| {
        let cfg = cfg.clone();
        async move { kennel_proxy::run(cfg, client).await.map_err(chain) }
    })
}

/// The Ingress controller as a supervised task.
pub fn spawn_ingress(
    client_cfg: kube::Config,
    cfg: kennel_ingress::IngressConfig,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_component("ingress controller", client_cfg, stop, move |client| {
        let cfg = cfg.clone();
        async move { kennel_ingress::run(cfg, client).await.map_err(chain) }
    })
}

/// `kennel scheduler`: runs until Ctrl-C / SIGTERM.
pub async fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_from(args.client.config().await?)?;
    let cfg = kennel_scheduler::SchedulerConfig {
        scheduler_name: args.scheduler_name.clone(),
        identity: identity(&args.identity),
        leader_elect: !args.no_leader_elect,
        ..Default::default()
    };
    tokio::select! {
        r = kennel_scheduler::run(cfg, client) => r.context("scheduler"),
        _ = crate::up::wait_for_signal() => Ok(()),
    }
}

/// `kennel controller-manager`: runs until Ctrl-C / SIGTERM.
pub async fn run_controllers(args: ControllerArgs) -> anyhow::Result<()> {
    let client_cfg = args.client.config().await?;
    let root_ca_pem = kennel_controllers::rootca::ca_pem_from(&client_cfg);
    let client = kube::Client::try_from(client_cfg)?;
    let cfg = kennel_controllers::ControllerConfig {
        identity: identity(&args.identity),
        leader_elect: !args.no_leader_elect,
        root_ca_pem,
    };
    tokio::select! {
        r = kennel_controllers::run(cfg, client) => r.context("controller manager"),
        _ = crate::up::wait_for_signal() => Ok(()),
    }
}

/// `kennel sim-nodes`: registers the nodes and plays their kubelets until Ctrl-C / SIGTERM.
pub async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_from(args.client.config().await?)?;
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let cfg = kennel_scheduler::sim::SimConfig {
        nodes: args.nodes,
        name_prefix: args.prefix.clone(),
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods,
        labels,
        pod_ready_delay: Duration::from_millis(args.ready_delay_ms),
        ..Default::default()
    };
    println!(
        "simulating {} nodes {}0..{}{} (no VMs: pods bound to them turn Running after {} ms)",
        args.nodes,
        args.prefix,
        args.prefix,
        args.nodes.saturating_sub(1),
        args.ready_delay_ms
    );
    tokio::select! {
        r = kennel_scheduler::sim::run(cfg, client) => r.context("simulated nodes"),
        _ = crate::up::wait_for_signal() => Ok(()),
    }
}

/// `kennel proxy`: programs the node's nftables until Ctrl-C / SIGTERM (or `--cleanup`).
pub async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let mut cfg = kennel_proxy::ProxyConfig::new(&args.node_name);
    cfg.node_ips = args.node_ip.clone();
    cfg.cluster_cidr = args.cluster_cidr;
    cfg.netns = args.netns.clone();
    if args.cleanup {
        kennel_proxy::cleanup(&cfg).context("removing the proxy's table")?;
        println!("removed nftables table ip {}", cfg.table);
        return Ok(());
    }
    let client = kube::Client::try_from(args.client.config().await?)?;
    println!(
        "service proxy for node {} (nftables table ip {})",
        cfg.node_name, cfg.table
    );
    tokio::select! {
        r = kennel_proxy::run(cfg, client) => r.context("service proxy"),
        _ = crate::up::wait_for_signal() => Ok(()),
    }
}

/// `kennel dns`: serves the cluster domain until Ctrl-C / SIGTERM.
pub async fn run_dns(args: DnsArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_from(args.client.config().await?)?;
    let mut cfg = kennel_dns::DnsConfig::new(args.listen.clone());
    cfg.domain = args.cluster_domain.clone();
    cfg.upstreams = if args.upstream.is_empty() {
        kennel_dns::upstreams_from_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        args.upstream.clone()
    };
    let running = kennel_dns::serve(cfg, client)
        .await
        .context("cluster DNS")?;
    println!(
        "cluster DNS for {} on {:?}",
        args.cluster_domain, running.addrs
    );
    crate::up::wait_for_signal().await;
    Ok(())
}

/// `kennel ingress`: the Ingress controller until Ctrl-C / SIGTERM.
pub async fn run_ingress(args: IngressArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_from(args.client.config().await?)?;
    let mut cfg = kennel_ingress::IngressConfig::new(args.node_ip.clone());
    cfg.http_listen = listener("--http-listen", &args.http_listen)?;
    cfg.https_listen = listener("--https-listen", &args.https_listen)?;
    let running = kennel_ingress::spawn(cfg, client).context("ingress controller")?;
    println!(
        "ingress controller (class {}) on http {:?}, https {:?}",
        kennel_ingress::DEFAULT_CLASS,
        running.http_addr,
        running.https_addr
    );
    crate::up::wait_for_signal().await;
    Ok(())
}
