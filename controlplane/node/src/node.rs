//! The Node object: registration (capacity, allocatable, addresses, nodeInfo), conditions
//! (Ready from the runtime's own conditions, Memory/Disk/PID pressure from the host), the
//! `not-ready` taint until Ready, and the heartbeat Lease in `kube-node-lease`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cri::CriClient;

/// Node settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// InternalIP.
    pub ip: String,
    /// Pod CIDR (`spec.podCIDR`).
    pub pod_cidr: String,
    /// `pods` capacity.
    pub max_pods: u32,
    /// Memory held back from pods (bytes).
    pub reserved_memory: u64,
    /// CPU held back from pods (millicores).
    pub reserved_cpu_millis: u64,
    /// Port of the node's HTTPS API (logs).
    pub kubelet_port: u16,
    /// Directory whose filesystem is the node's ephemeral storage.
    pub data_dir: PathBuf,
}

/// Errors of registration and heartbeats.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API server refused.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    /// A host fact could not be read.
    #[error("reading {what}: {source}")]
    Host {
        /// What.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// Facts read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// CPUs.
    pub cpus: u64,
    /// MemTotal, bytes.
    pub memory: u64,
    /// MemAvailable, bytes.
    pub memory_available: u64,
    /// Size of the data dir's filesystem, bytes.
    pub disk: u64,
    /// Free space there, bytes.
    pub disk_available: u64,
    /// Kernel release.
    pub kernel: String,
    /// OS image (PRETTY_NAME of os-release).
    pub os_image: String,
    /// Processes now / pid_max.
    pub pids: (u64, u64),
}

fn meminfo(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Reads the host's facts.
pub fn host_facts(data_dir: &std::path::Path) -> Result<HostFacts, NodeError> {
    let host = |what| move |source| NodeError::Host { what, source };
    let mem = std::fs::read_to_string("/proc/meminfo").map_err(host("/proc/meminfo"))?;
    let fs = nix::sys::statvfs::statvfs(data_dir).map_err(|e| NodeError::Host {
        what: "statvfs of the data dir",
        source: e.into(),
    })?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os_image = os
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into());
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    Ok(HostFacts {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1),
        memory: meminfo(&mem, "MemTotal:"),
        memory_available: meminfo(&mem, "MemAvailable:"),
        disk: fs.blocks() * fs.fragment_size(),
        disk_available: fs.blocks_available() * fs.fragment_size(),
        kernel: kernel.trim().to_string(),
        os_image,
        pids: (procs, pid_max),
    })
}

/// kubelet's default hard eviction thresholds, used for the pressure conditions.
const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;
const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;

fn q(v: String) -> Quantity {
    Quantity(v)
}

/// capacity and allocatable.
pub fn resources(
    cfg: &NodeConfig,
    h: &HostFacts,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let capacity = BTreeMap::from([
        ("cpu".to_string(), q(h.cpus.to_string())),
        ("memory".to_string(), q(format!("{}Ki", h.memory / 1024))),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", h.disk / 1024)),
        ),
    ]);
    let cpu = (h.cpus * 1000).saturating_sub(cfg.reserved_cpu_millis);
    let mem = h
        .memory
        .saturating_sub(cfg.reserved_memory + MEMORY_AVAILABLE_MIN);
    let disk = h.disk - h.disk * DISK_AVAILABLE_MIN_PERCENT / 100;
    let allocatable = BTreeMap::from([
        ("cpu".to_string(), q(format!("{cpu}m"))),
        ("memory".to_string(), q(format!("{}Ki", mem / 1024))),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        ("ephemeral-storage".to_string(), q(disk.to_string())),
    ]);
    (capacity, allocatable)
}

/// The runtime's readiness: Ok, or the reason it is not ready.
pub async fn runtime_ready(cri: &CriClient) -> Result<(), String> {
    let conds = cri
        .status()
        .await
        .map_err(|e| format!("container runtime is down: {e}"))?;
    for want in ["RuntimeReady", "NetworkReady"] {
        match conds.iter().find(|c| c.r#type == want) {
            Some(c) if c.status => {}
            Some(c) => {
                return Err(format!(
                    "{want}=false reason:{} message:{}",
                    c.reason, c.message
                ))
            }
            None => return Err(format!("{want} not reported")),
        }
    }
    Ok(())
}

fn cond(
    old: &[NodeCondition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Time,
) -> NodeCondition {
    let s = if status { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == s)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    NodeCondition {
        type_: type_.into(),
        status: s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since),
    }
}

/// The node's conditions, reasons and messages worded as kubelet's.
pub fn conditions(
    old: &[NodeCondition],
    h: &HostFacts,
    ready: &Result<(), String>,
    now: &Time,
) -> Vec<NodeCondition> {
    let mem_pressure = h.memory_available < MEMORY_AVAILABLE_MIN;
    let disk_pressure = h.disk_available * 100 < h.disk * DISK_AVAILABLE_MIN_PERCENT;
    let pid_pressure = h.pids.0 * 100 > h.pids.1 * 90;
    vec![
        if mem_pressure {
            cond(
                old,
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                now,
            )
        } else {
            cond(
                old,
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now,
            )
        },
        if disk_pressure {
            cond(
                old,
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                now,
            )
        } else {
            cond(
                old,
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                now,
            )
        },
        if pid_pressure {
            cond(
                old,
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
                now,
            )
        } else {
            cond(
                old,
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now,
            )
        },
        match ready {
            Ok(()) => cond(
                old,
                "Ready",
                true,
                "KubeletReady",
                "kubelet is posting ready status",
                now,
            ),
            Err(why) => cond(old, "Ready", false, "KubeletNotReady", why, now),
        },
    ]
}

/// The `not-ready` taint kubelet keeps on a node until it is Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Creates the Node when absent (tainted not-ready), returning it.
pub async fn register(client: &kube::Client, cfg: &NodeConfig) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    if let Some(n) = api.get_opt(&cfg.name).await? {
        return Ok(n);
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), cfg.name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                (
                    "kubernetes.io/arch".to_string(),
                    std::env::consts::ARCH
                        .replace("x86_64", "amd64")
                        .replace("aarch64", "arm64"),
                ),
                ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cfg.pod_cidr.clone()),
            pod_cidrs: Some(vec![cfg.pod_cidr.clone()]),
            taints: Some(vec![Taint {
                key: NOT_READY_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(&cfg.name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Writes the node's status (and drops or restores the not-ready taint). Returns allocatable.
pub async fn update_status(
    client: &kube::Client,
    cri: &CriClient,
    cfg: &NodeConfig,
) -> Result<BTreeMap<String, Quantity>, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = register(client, cfg).await?;
    let h = host_facts(&cfg.data_dir)?;
    let ready = runtime_ready(cri).await;
    let version = cri.version().await.ok();
    let now = Time(Timestamp::now());
    let old = node
        .status
        .clone()
        .unwrap_or_default()
        .conditions
        .unwrap_or_default();
    let (capacity, allocatable) = resources(cfg, &h);
    let status = json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions(&old, &h, &ready, &now),
        "addresses": [
            {"type": "InternalIP", "address": cfg.ip},
            {"type": "Hostname", "address": cfg.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
            "kernelVersion": h.kernel,
            "osImage": h.os_image,
            "containerRuntimeVersion": version.as_ref().map(|v| format!("{}://{}", v.runtime_name, v.runtime_version)).unwrap_or_else(|| "kennel://unknown".into()),
            "kubeletVersion": concat!("v1.33.0-kennel.", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
    });
    api.patch_status(
        &cfg.name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    let taints = node
        .spec
        .clone()
        .unwrap_or_default()
        .taints
        .unwrap_or_default();
    let tainted = taints.iter().any(|t| t.key == NOT_READY_TAINT);
    if ready.is_ok() == tainted {
        let mut new: Vec<Taint> = taints
            .into_iter()
            .filter(|t| t.key != NOT_READY_TAINT)
            .collect();
        if ready.is_err() {
            new.push(Taint {
                key: NOT_READY_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
        api.patch(
            &cfg.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": new}})),
        )
        .await?;
    }
    Ok(allocatable)
}

/// Lease duration kubelet uses (40 s), renewed every 10 s.
pub const LEASE_SECONDS: i32 = 40;
/// Heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Creates or renews the node's Lease.
pub async fn renew_lease(client: &kube::Client, node: &Node) -> Result<(), NodeError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(name.clone()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(now),
        ..Default::default()
    };
    match api.get_opt(&name).await? {
        Some(mut l) => {
            l.spec = Some(spec);
            api.replace(&name, &PostParams::default(), &l).await?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid: node.metadata.uid.clone().unwrap_or_default(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &l).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory: 24 << 30,
            memory_available: 20 << 30,
            disk: 100 << 30,
            disk_available: 50 << 30,
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            pids: (300, 32768),
        }
    }

    fn cfg() -> NodeConfig {
        NodeConfig {
            name: "n".into(),
            ip: "10.0.0.1".into(),
            pod_cidr: "10.88.0.0/16".into(),
            max_pods: 110,
            reserved_memory: 1 << 30,
            reserved_cpu_millis: 100,
            kubelet_port: 10250,
            data_dir: "/".into(),
        }
    }

    #[test]
    fn allocatable_is_capacity_minus_reserved_and_eviction_threshold() {
        let (cap, alloc) = resources(&cfg(), &facts());
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(alloc["cpu"].0, "1900m");
        assert_eq!(cap["memory"].0, format!("{}Ki", 24u64 << 20));
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", ((24u64 << 30) - (1 << 30) - (100 << 20)) / 1024)
        );
        assert_eq!(alloc["pods"].0, "110");
    }

    #[test]
    fn pressure_conditions_follow_kubelet_thresholds() {
        let now = Time(Timestamp::now());
        let mut h = facts();
        let c = conditions(&[], &h, &Ok(()), &now);
        let get =
            |c: &[NodeCondition], t: &str| c.iter().find(|x| x.type_ == t).unwrap().status.clone();
        assert_eq!(get(&c, "Ready"), "True");
        assert_eq!(get(&c, "MemoryPressure"), "False");
        h.memory_available = 50 << 20;
        h.disk_available = 5 << 30;
        let c2 = conditions(&c, &h, &Err("runtime down".into()), &now);
        assert_eq!(get(&c2, "MemoryPressure"), "True");
        assert_eq!(get(&c2, "DiskPressure"), "True");
        let ready = c2.iter().find(|x| x.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_deref()),
            ("False", Some("runtime down"))
        );
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let t0 = Time(Timestamp::from_second(1_000).unwrap());
        let t1 = Time(Timestamp::from_second(2_000).unwrap());
        let c = conditions(&[], &facts(), &Ok(()), &t0);
        let c2 = conditions(&c, &facts(), &Ok(()), &t1);
        let r = c2.iter().find(|x| x.type_ == "Ready").unwrap();
        assert_eq!(r.last_transition_time, Some(t0));
        assert_eq!(r.last_heartbeat_time, Some(t1));
    }

    #[test]
    fn meminfo_parses_kb() {
        assert_eq!(
            meminfo(
                "MemTotal:       1024 kB\nMemAvailable: 2 kB\n",
                "MemAvailable:"
            ),
            2048
        );
    }
}
