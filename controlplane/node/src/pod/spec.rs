//! A Pod's spec as CRI requests: the sandbox config (metadata, hostname, DNS, port mappings,
//! pod-level memory for the VM) and each container's config (image, command, env, resources,
//! log path). Pure functions.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::labels;

/// Node-wide settings the sandbox config needs.
#[derive(Debug, Clone, Default)]
pub struct SandboxContext {
    /// Cluster DNS server IPs (empty: no cluster DNS; ClusterFirst falls back to Default).
    pub cluster_dns: Vec<String>,
    /// Cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The host's resolv.conf (`dnsPolicy: Default`).
    pub host_resolv: ResolvConf,
    /// Root of the pod log directories.
    pub logs_root: std::path::PathBuf,
}

/// A parsed resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// nameserver lines.
    pub servers: Vec<String>,
    /// search domains.
    pub searches: Vec<String>,
    /// options.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text as kubelet does: `nameserver` lines accumulate, the last
    /// `search` and the last `options` line win, search domains lose a trailing dot, and
    /// anything else (comments, `domain`) is ignored.
    pub fn parse(text: &str) -> Self {
        let mut r = Self::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => r.servers.extend(w.next().map(str::to_string)),
                Some("search") => {
                    r.searches = w
                        .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                        .collect()
                }
                Some("options") => r.options = w.map(str::to_string).collect(),
                _ => {}
            }
        }
        r
    }
}

/// The pod's log directory: `<root>/<namespace>_<name>_<uid>` (kubelet's layout).
pub fn log_dir(root: &Path, pod: &Pod) -> std::path::PathBuf {
    let m = &pod.metadata;
    root.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

/// Labels that identify the pod's CRI objects.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (labels::POD_NAME.into(), m.name.clone().unwrap_or_default()),
        (
            labels::POD_NAMESPACE.into(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (labels::POD_UID.into(), m.uid.clone().unwrap_or_default()),
    ])
}

/// Most search domains kubelet passes on (`MaxDNSSearchPathsExpanded`).
const MAX_SEARCHES: usize = 32;
/// Longest search domain kubelet passes on (a DNS-1123 subdomain).
const MAX_SEARCH_LEN: usize = 253;
/// Longest search line kubelet passes on (`MaxDNSSearchListCharsExpanded`).
const MAX_SEARCH_LINE: usize = 2048;

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// The DNS config per `dnsPolicy` (+ `dnsConfig`), and whether ClusterFirst had to fall back
/// because no cluster DNS is configured (kubelet's `MissingClusterDNS`).
pub fn dns_config(pod: &Pod, ctx: &SandboxContext) -> (cri::DnsConfig, bool) {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut fallback = false;
    let mut r = match policy {
        "None" => ResolvConf::default(),
        "Default" => ctx.host_resolv.clone(),
        _ if ctx.cluster_dns.is_empty() => {
            fallback = true;
            ctx.host_resolv.clone()
        }
        _ => {
            let d = &ctx.cluster_domain;
            let mut searches = if d.is_empty() {
                vec![]
            } else {
                vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()]
            };
            searches.extend(ctx.host_resolv.searches.iter().cloned());
            ResolvConf {
                servers: ctx.cluster_dns.clone(),
                searches: omit_duplicates(searches),
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(c) = spec.dns_config {
        r.servers.extend(c.nameservers.unwrap_or_default());
        r.servers = omit_duplicates(r.servers);
        r.searches.extend(c.searches.unwrap_or_default());
        r.searches = omit_duplicates(r.searches);
        for o in c.options.unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            let opt = match o.value.filter(|v| !v.is_empty()) {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            r.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            r.options.push(opt);
        }
    }
    // resolv.conf limits as kubelet applies them: 3 nameservers; 32 search domains of at most
    // 253 characters each, in a search line of at most 2048.
    r.servers.truncate(3);
    r.searches.truncate(MAX_SEARCHES);
    r.searches.retain(|s| s.len() <= MAX_SEARCH_LEN);
    let mut line =
        r.searches.iter().map(|s| s.len()).sum::<usize>() + r.searches.len().saturating_sub(1);
    while line > MAX_SEARCH_LINE {
        let last = r.searches.pop().map_or(0, |s| s.len());
        line = line.saturating_sub(last + 1);
    }
    (
        cri::DnsConfig {
            servers: r.servers,
            searches: r.searches,
            options: r.options,
        },
        fallback,
    )
}

/// The pod's hostname: `spec.hostname` (when not empty) or the pod name, truncated to 63
/// characters.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let mut h = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    h.truncate(63);
    h.trim_end_matches(['-', '.']).to_string()
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => cri::Protocol::Udp as i32,
        Some("SCTP") => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

/// hostPort mappings of every container.
pub fn port_mappings(pod: &Pod) -> Vec<cri::PortMapping> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// The sandbox config; `attempt` counts sandboxes made for this pod.
pub fn sandbox_config(pod: &Pod, ctx: &SandboxContext, attempt: u32) -> cri::PodSandboxConfig {
    let m = &pod.metadata;
    let mut labels = pod_labels(pod);
    for (k, v) in m.labels.clone().unwrap_or_default() {
        labels.entry(k).or_insert(v);
    }
    let overhead = pod
        .spec
        .as_ref()
        .and_then(|s| s.overhead.as_ref())
        .and_then(|o| o.get("memory"))
        .map(quantity_bytes)
        .unwrap_or(0);
    // The pod's own limit, without the overhead (upstream calculateSandboxResources): the
    // runtime adds `overhead` to it.
    let memory = crate::admit::pod_memory_limit(pod)
        .map(|m| m.saturating_sub(overhead))
        .unwrap_or(0);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: hostname(pod),
        log_directory: log_dir(&ctx.logs_root, pod).display().to_string(),
        dns_config: Some(dns_config(pod, ctx).0),
        port_mappings: port_mappings(pod),
        labels,
        annotations: m
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            resources: (memory > 0).then_some(cri::LinuxContainerResources {
                memory_limit_in_bytes: memory,
                ..Default::default()
            }),
            overhead: (overhead > 0).then_some(cri::LinuxContainerResources {
                memory_limit_in_bytes: overhead,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A quantity in bytes (rounded up; unparsable counts as 0 — the API validated it).
pub fn quantity_bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> i64 {
    crate::admit::quantity::parse_quantity(&q.0)
        .map(|p| p.value())
        .unwrap_or(0)
}

/// A quantity in thousandths (cpu millicores; rounded up).
pub fn quantity_millis(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> i64 {
    crate::admit::quantity::parse_quantity(&q.0)
        .map(|p| p.milli_value())
        .unwrap_or(0)
}

/// Most cpu shares kubelet sets (`MaxShares`).
const MAX_SHARES: i64 = 262_144;

/// CFS period kubelet uses (100 ms).
pub const CPU_PERIOD_US: i64 = 100_000;

/// Container cgroup resources from requests and limits (kubelet's mapping: shares from the cpu
/// request, quota from the cpu limit, memory.max from the memory limit).
pub fn resources(c: &Container) -> cri::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    let limits = r.limits.unwrap_or_default();
    let requests = r.requests.unwrap_or_default();
    let cpu_req = requests
        .get("cpu")
        .or_else(|| limits.get("cpu"))
        .map(quantity_millis);
    // kubelet gives a container without a cpu request the minimum share (2, cgroup v2
    // weight 1). Inside a pod VM that container would compete at weight 1 with the guest agent
    // (weight 100) and starve whenever the agent is busy, which on emulating hosts is often
    // (measured: a one-line `sh -c echo` init container not reaped for minutes). Between pods
    // the VM is the boundary, so no request means the runtime's default weight here.
    let shares = match cpu_req {
        Some(m) => (m * 1024 / 1000).clamp(2, MAX_SHARES),
        None => 0,
    };
    let quota = limits
        .get("cpu")
        .map(|q| (quantity_millis(q) * CPU_PERIOD_US / 1000).max(1000))
        .unwrap_or(0);
    cri::LinuxContainerResources {
        cpu_period: if quota > 0 { CPU_PERIOD_US } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: limits.get("memory").map(quantity_bytes).unwrap_or(0),
        ..Default::default()
    }
}

/// One container's config. `kind` is "init" or "app"; `env` is already resolved.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    kind: &str,
    attempt: u32,
    env: Vec<(String, String)>,
) -> cri::ContainerConfig {
    let mut labels = pod_labels(pod);
    labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    labels.insert(labels::CONTAINER_KIND.into(), kind.into());
    let (command, args) = crate::env::expand_command_and_args(c, &env);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        labels,
        annotations: HashMap::from([
            (
                "io.kubernetes.container.restartCount".into(),
                attempt.to_string(),
            ),
            (
                "io.kubernetes.container.terminationMessagePath".into(),
                c.termination_message_path
                    .clone()
                    .unwrap_or_else(|| "/dev/termination-log".into()),
            ),
        ]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(c)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
