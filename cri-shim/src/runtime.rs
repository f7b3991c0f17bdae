//! The runtime's shared state and plumbing: options, the error type every RuntimeService
//! operation returns (mapped to specific gRPC codes), agent connections, per-sandbox locks,
//! the node network and templates. Operations live in `sandbox` and `container`.

use crate::logs::CriLogWriter;
use crate::state::{StateError, StateStore};
use crate::vm::{VmError, VmOptions};
use agent_proto::AgentClient;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Guest RAM a sandbox gets when its config states no pod-level memory limit, MiB.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Fixed guest overhead added to a pod-level memory limit (kernel, agent, page tables), MiB.
pub const GUEST_OVERHEAD_MIB: u64 = 64;
/// Guest RAM sizes are rounded up to a multiple of this, so pods share templates, MiB.
pub const MEM_STEP_MIB: u64 = 64;
/// How long to wait for an agent to answer after its VM started (cold boots here take minutes).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(900);

/// Errors of runtime operations; each maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// No such sandbox/container (or a prefix matching several).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A sandbox/container with that name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in the wrong state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The VM or its agent is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// Not supported by kennel.
    #[error("{0}")]
    Unimplemented(String),
    /// A bounded resource is full (pending streaming requests).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Local trouble (state files, processes).
    #[error("{0}")]
    Internal(String),
}

impl From<StateError> for CriError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Ambiguous(_) => CriError::NotFound(e.to_string()),
            other => CriError::Internal(chain(&other)),
        }
    }
}

impl From<VmError> for CriError {
    fn from(e: VmError) -> Self {
        CriError::Unavailable(chain(&e))
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> Self {
        use tonic::Code;
        let code = match &e {
            CriError::NotFound(_) => Code::NotFound,
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::ResourceExhausted(_) => Code::ResourceExhausted,
            CriError::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// An agent call's status as a runtime error, keeping its code.
pub fn agent_error(what: &str, s: tonic::Status) -> CriError {
    let msg = format!("agent {what}: {}", s.message());
    match s.code() {
        tonic::Code::NotFound => CriError::NotFound(msg),
        tonic::Code::InvalidArgument => CriError::InvalidArgument(msg),
        tonic::Code::AlreadyExists => CriError::AlreadyExists(msg),
        tonic::Code::FailedPrecondition => CriError::FailedPrecondition(msg),
        tonic::Code::DeadlineExceeded => CriError::DeadlineExceeded(msg),
        _ => CriError::Unavailable(msg),
    }
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// What the runtime is configured with.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// State directory (records, pod directories).
    pub state_dir: PathBuf,
    /// How VMs are started.
    pub vm: VmOptions,
    /// Node pod CIDR.
    pub pod_cidr: String,
    /// Bridge name.
    pub bridge: String,
    /// Named network namespace holding the node network (tests); None = the current one.
    pub netns: Option<String>,
}

/// The runtime: state, network, agents. Shared behind an `Arc`.
pub struct Runtime {
    /// Options.
    pub opts: RuntimeOptions,
    /// Persisted records.
    pub state: StateStore,
    /// The image store.
    pub images: Arc<images::store::Store>,
    /// Node network, or why it is not ready.
    pub network: Result<Arc<netns::NodeNetwork>, String>,
    /// Pod CIDR from UpdateRuntimeConfig.
    pub pod_cidr_update: Mutex<Option<String>>,
    pub(crate) agents: tokio::sync::Mutex<HashMap<String, AgentClient>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) templates: tokio::sync::Mutex<HashMap<u64, Result<PathBuf, String>>>,
    pub(crate) logs: Mutex<HashMap<String, Arc<Mutex<CriLogWriter>>>>,
    /// Container output offered to attach sessions.
    pub(crate) fanout: Arc<crate::fanout::Fanout>,
}

impl Runtime {
    /// Opens the state and sets up the node network (a failure leaves the network not ready).
    pub fn new(
        opts: RuntimeOptions,
        images: Arc<images::store::Store>,
    ) -> Result<Arc<Self>, CriError> {
        let state = StateStore::open(&opts.state_dir)?;
        let network = setup_network(&opts);
        if let Err(e) = &network {
            tracing::warn!("node network not ready: {e}");
        }
        Ok(Arc::new(Self {
            opts,
            state,
            images,
            network,
            pod_cidr_update: Mutex::new(None),
            agents: tokio::sync::Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            templates: tokio::sync::Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            fanout: Arc::new(crate::fanout::Fanout::new()),
        }))
    }

    /// The lock serialising operations on one sandbox (and its containers).
    pub fn sandbox_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Forgets a sandbox's lock.
    pub fn drop_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(id);
    }

    /// The agent of a sandbox (connecting on first use).
    pub async fn agent(&self, sandbox_id: &str) -> Result<AgentClient, CriError> {
        if let Some(c) = self.agents.lock().await.get(sandbox_id) {
            return Ok(c.clone());
        }
        let rec = self
            .state
            .sandbox(sandbox_id)?
            .ok_or_else(|| CriError::NotFound(format!("sandbox {sandbox_id} not found")))?;
        let vmm = rec.vmm.ok_or_else(|| {
            CriError::FailedPrecondition(format!("sandbox {sandbox_id} has no running VM"))
        })?;
        let client = connect_agent(&vmm.vsock_socket, Duration::from_secs(30)).await?;
        self.agents
            .lock()
            .await
            .insert(sandbox_id.to_string(), client.clone());
        Ok(client)
    }

    /// Forgets the agent connection of a sandbox.
    pub async fn forget_agent(&self, sandbox_id: &str) {
        self.agents.lock().await.remove(sandbox_id);
    }

    /// The node network, or FailedPrecondition saying why it is not ready.
    pub fn node_network(&self) -> Result<Arc<netns::NodeNetwork>, CriError> {
        self.network
            .clone()
            .map_err(|e| CriError::FailedPrecondition(format!("node network not ready: {e}")))
    }
}

fn setup_network(opts: &RuntimeOptions) -> Result<Arc<netns::NodeNetwork>, String> {
    let cidr = opts
        .pod_cidr
        .parse()
        .map_err(|e| format!("pod CIDR {:?}: {e}", opts.pod_cidr))?;
    let mut cfg = netns::NodeNetConfig::new(cidr, opts.state_dir.join("net"));
    cfg.bridge = opts.bridge.clone();
    let node = match &opts.netns {
        Some(name) => netns::NodeNetwork::setup_in(netns::NetNs::named(name), cfg),
        None => netns::NodeNetwork::setup(cfg),
    };
    node.map(Arc::new).map_err(|e| chain(&e))
}

/// Connects to an agent through a VM's hybrid vsock socket, retrying until `timeout` (the VM
/// may still be booting) and checking it answers Health.
pub async fn connect_agent(
    vsock: &std::path::Path,
    timeout: Duration,
) -> Result<AgentClient, CriError> {
    connect_agent_while(vsock, timeout, || Ok(())).await
}

/// As [`connect_agent`], giving up early when `check` fails (e.g. the VMM exited).
pub async fn connect_agent_while(
    vsock: &std::path::Path,
    timeout: Duration,
    check: impl Fn() -> Result<(), CriError>,
) -> Result<AgentClient, CriError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last =
            match agent_proto::client::connect_hybrid_vsock(vsock, agent_proto::DEFAULT_VSOCK_PORT)
                .await
            {
                Ok(mut c) => match c.health(agent_proto::pb::Empty {}).await {
                    Ok(_) => return Ok(c),
                    Err(s) => s.to_string(),
                },
                Err(e) => chain(&e),
            };
        check()?;
        if tokio::time::Instant::now() >= deadline {
            return Err(CriError::Unavailable(format!(
                "agent at {} not reachable: {last}",
                vsock.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
