//! The node agent, assembled in a documented order: connect to the runtime, register the Node,
//! start the heartbeat (Lease + status), the pod cache and the pod workers. (The node's HTTPS API
//! for logs, `server.rs`, is started beside it by `kennel up`.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;

use crate::backoff::Backoff;
use crate::cri::CriClient;
use crate::node::{self, NodeConfig, NodeError};
use crate::pod::spec::{ResolvConf, SandboxContext};
use crate::pod::{self, PodEnv};

/// Everything the agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node.
    pub node: NodeConfig,
    /// CRI socket of the runtime.
    pub cri_socket: PathBuf,
    /// Cluster DNS server IPs.
    pub cluster_dns: Vec<String>,
    /// Cluster domain.
    pub cluster_domain: String,
    /// Root of the pod log directories.
    pub logs_root: PathBuf,
    /// resolv.conf for `dnsPolicy: Default`.
    pub resolv_conf: PathBuf,
    /// Directory of the disk images the node's `kennel.dev/local-disk` provisioner makes
    /// (`<data dir>/volumes`; see [`crate::provisioner`]).
    pub volumes_dir: PathBuf,
}

impl AgentConfig {
    /// The settings of this node's provisioner.
    pub fn provisioner(&self) -> crate::provisioner::ProvisionerConfig {
        crate::provisioner::ProvisionerConfig {
            node_name: self.node.name.clone(),
            volumes_dir: self.volumes_dir.clone(),
        }
    }
}

/// Errors that stop the agent (the supervisor restarts it).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Registration failed.
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// A component of the agent ended.
    #[error("{0} ended")]
    Ended(&'static str),
}

/// Per-call deadline for CRI requests (a cold VM boot here is tens of seconds).
const CRI_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs the node agent until a part of it fails.
pub async fn run(cfg: AgentConfig, client: kube::Client) -> Result<(), AgentError> {
    let cri = CriClient::new(&cfg.cri_socket, CRI_TIMEOUT);
    let node_obj = node::register(&client, &cfg.node).await?;
    tracing::info!(node = %cfg.node.name, "node registered");
    let allocatable = node::update_status(&client, &cri, &cfg.node).await?;
    let (reader, writer) = reflector::store::<Pod>();
    let resolv = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
    let env = Arc::new(PodEnv {
        client: client.clone(),
        cri: cri.clone(),
        node_name: cfg.node.name.clone(),
        host_ip: cfg.node.ip.clone(),
        sandbox: SandboxContext {
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            host_resolv: ResolvConf::parse(&resolv),
            logs_root: cfg.logs_root.clone(),
        },
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(cfg.node.name.clone()),
            },
        ),
        backoff: std::sync::Mutex::new(Backoff::default()),
        allocatable: std::sync::Mutex::new(allocatable),
        pods: reader,
        tokens: crate::volume::token::TokenManager::new(),
    });
    let reflect = tokio::spawn(pod::reflect(client.clone(), cfg.node.name.clone(), writer));
    let manage = tokio::spawn(pod::manage(env.clone()));
    let heartbeat = {
        let (client, cri, node_cfg, env) =
            (client.clone(), cri.clone(), cfg.node.clone(), env.clone());
        tokio::spawn(async move {
            let mut node_obj = node_obj;
            loop {
                if let Err(e) = node::renew_lease(&client, &node_obj).await {
                    tracing::warn!("lease: {e}");
                }
                match node::update_status(&client, &cri, &node_cfg).await {
                    Ok(a) => *env.allocatable.lock().expect("allocatable lock") = a,
                    Err(e) => tracing::warn!("node status: {e}"),
                }
                tokio::time::sleep(node::HEARTBEAT).await;
                if let Ok(n) = node::register(&client, &node_cfg).await {
                    node_obj = n;
                }
            }
        })
    };
    tokio::select! {
        _ = reflect => Err(AgentError::Ended("pod watch")),
        _ = manage => Err(AgentError::Ended("pod manager")),
        _ = heartbeat => Err(AgentError::Ended("heartbeat")),
    }
}
