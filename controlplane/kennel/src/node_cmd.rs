//! `kennel node`: the node agent alone, against any API server (a kubeconfig) and any CRI runtime
//! (a socket) — what `kennel up` runs in-process, for nodes whose control plane lives elsewhere.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use kennel_node::agent::AgentConfig;
use kennel_node::node::NodeConfig;
use kennel_node::server::LogServerConfig;
use tokio::sync::watch;

use crate::supervise;

/// `kennel node` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Kubeconfig with the node's credentials.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// CRI socket of the runtime.
    #[arg(long, default_value = "/run/kennel/cri.sock")]
    pub cri_socket: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's InternalIP.
    #[arg(long)]
    pub node_ip: String,
    /// The node's pod CIDR (as the runtime was given it).
    #[arg(long, default_value = "10.88.0.0/16")]
    pub pod_cidr: String,
    /// Directory for pod logs (`<dir>/pods`) and the ephemeral-storage figure.
    #[arg(long, default_value = "/var/lib/kennel")]
    pub data_dir: PathBuf,
    /// Cluster DNS server IPs.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Maximum pods.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Resources held back from pods, e.g. `cpu=100m,memory=256Mi`.
    #[arg(long, default_value = "cpu=100m,memory=256Mi")]
    pub system_reserved: String,
    /// Port of the node's HTTPS API (logs).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Serving certificate of the node API (PEM; signed by the cluster CA). Without it, and
    /// the key and the client token, `kubectl logs` cannot reach this node.
    #[arg(long, requires_all = ["tls_key", "client_token_file"])]
    pub tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// File holding the token the API server presents to node APIs.
    #[arg(long)]
    pub client_token_file: Option<PathBuf>,
}

/// The node agent as a supervised task (a fresh kube client per start).
pub fn spawn_agent(
    cfg: AgentConfig,
    client_cfg: kube::Config,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise::task("node agent", stop, move || {
        let (cfg, client_cfg) = (cfg.clone(), client_cfg.clone());
        async move {
            let client = kube::Client::try_from(client_cfg).map_err(|e| e.to_string())?;
            kennel_node::agent::run(cfg, client)
                .await
                .map_err(|e| e.to_string())
        }
    }))
}

/// The node's `kennel.dev/local-disk` provisioner as a supervised task (a fresh kube client
/// per start).
pub fn spawn_provisioner(
    cfg: kennel_node::provisioner::ProvisionerConfig,
    client_cfg: kube::Config,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise::task("volume provisioner", stop, move || {
        let (cfg, client_cfg) = (cfg.clone(), client_cfg.clone());
        async move {
            let client = kube::Client::try_from(client_cfg).map_err(|e| e.to_string())?;
            kennel_node::provisioner::run(cfg, client)
                .await
                .map_err(|e| e.to_string())
        }
    }))
}

/// The node's HTTPS API (logs) as a supervised task.
pub fn spawn_log_api(
    cfg: LogServerConfig,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise::task("node API (logs)", stop, move || {
        let cfg = cfg.clone();
        async move {
            let _server = kennel_node::server::spawn(cfg)
                .await
                .map_err(|e| e.to_string())?;
            futures::future::pending::<Result<(), String>>().await
        }
    }))
}

fn read(p: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// Runs the node agent (and its log API) until Ctrl-C / SIGTERM.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let (reserved_cpu, reserved_mem) = crate::up::parse_reserved(&args.system_reserved)?;
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client_cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let cfg = AgentConfig {
        node: NodeConfig {
            name: name.clone(),
            ip: args.node_ip.clone(),
            pod_cidr: args.pod_cidr.clone(),
            max_pods: args.max_pods,
            reserved_memory: reserved_mem,
            reserved_cpu_millis: reserved_cpu,
            kubelet_port: args.kubelet_port,
            data_dir: args.data_dir.clone(),
        },
        cri_socket: args.cri_socket.clone(),
        cluster_dns: args.cluster_dns.clone(),
        cluster_domain: args.cluster_domain.clone(),
        logs_root: args.data_dir.join("pods"),
        resolv_conf: "/etc/resolv.conf".into(),
        volumes_dir: args.data_dir.join("volumes"),
    };
    std::fs::create_dir_all(&cfg.logs_root)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![];
    match (&args.tls_cert, &args.tls_key, &args.client_token_file) {
        (Some(c), Some(k), Some(t)) => {
            let log_cfg = LogServerConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], args.kubelet_port)),
                cert_pem: read(c)?,
                key_pem: read(k)?,
                client_token: read(t)?.trim().to_string(),
                logs_root: cfg.logs_root.clone(),
                cri_socket: Some(cfg.cri_socket.clone()),
                node_name: name.clone(),
            };
            tasks.push(spawn_log_api(log_cfg, stop_rx.clone()));
        }
        _ => tracing::warn!(
            "no --tls-cert/--tls-key/--client-token-file: the node API (kubectl logs) is off"
        ),
    }
    tasks.push(spawn_agent(cfg, client_cfg, stop_rx));
    println!(
        "node agent {name} ({}) running against {}",
        args.node_ip,
        args.kubeconfig.display()
    );
    crate::up::wait_for_signal().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
