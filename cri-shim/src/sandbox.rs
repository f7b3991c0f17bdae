//! Pod sandboxes: RunPodSandbox (network, VM from a template or a cold boot, agent identity),
//! StopPodSandbox, RemovePodSandbox, liveness of their VMs and recovery after a restart.

use crate::runtime::AGENT_TIMEOUT;
use crate::runtime::{agent_error, chain, connect_agent, connect_agent_while, CriError, Runtime};
use crate::runtime::{DEFAULT_MEM_MIB, GUEST_OVERHEAD_MIB, MEM_STEP_MIB};
use crate::state::{
    new_id, now_ns, sandbox_name, ContainerState, SandboxRecord, SandboxState, VmmInfo,
};
use crate::vm::{self, VmSpec};
use agent_proto::pb;
use k8s_cri::v1::PodSandboxConfig;
use std::sync::Arc;
use std::time::Duration;

/// Checks a RunPodSandbox config.
pub fn validate_config(config: Option<&PodSandboxConfig>) -> Result<&PodSandboxConfig, CriError> {
    let c = config.ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
    let m = c
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::InvalidArgument("config.metadata is required".into()))?;
    for (field, v) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if v.is_empty() {
            return Err(CriError::InvalidArgument(format!(
                "config.metadata.{field} is required"
            )));
        }
    }
    if !c.hostname.is_empty() {
        if let Some(why) = crate::hostname::problem(&c.hostname) {
            return Err(CriError::InvalidArgument(format!(
                "config.hostname {:?} is not a valid hostname: {why}",
                c.hostname
            )));
        }
    }
    Ok(c)
}

/// Guest RAM for a sandbox: the pod-level memory limit plus overhead (when stated) plus the
/// fixed guest overhead, rounded up to [`MEM_STEP_MIB`]; else [`DEFAULT_MEM_MIB`].
pub fn guest_mem_mib(config: &PodSandboxConfig) -> u64 {
    let linux = config.linux.as_ref();
    let limit = linux
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.memory_limit_in_bytes)
        .unwrap_or(0);
    if limit <= 0 {
        return DEFAULT_MEM_MIB;
    }
    let overhead = linux
        .and_then(|l| l.overhead.as_ref())
        .map(|r| r.memory_limit_in_bytes.max(0))
        .unwrap_or(0);
    let mib = ((limit + overhead) as u64).div_ceil(1 << 20) + GUEST_OVERHEAD_MIB;
    mib.div_ceil(MEM_STEP_MIB) * MEM_STEP_MIB
}

/// The sandbox's hostPort mappings (CRI `port_mappings` with a host port) for the node's NAT.
/// SCTP and a specific `host_ip` are refused by name: the mappings apply on every node address.
pub fn host_ports(config: &PodSandboxConfig) -> Result<Vec<netns::HostPortMapping>, CriError> {
    let mut out = Vec::new();
    for (i, m) in config.port_mappings.iter().enumerate() {
        if m.host_port == 0 {
            continue;
        }
        let port = |v: i32, what: &str| {
            u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
                CriError::InvalidArgument(format!(
                    "port_mappings[{i}].{what} {v} is not a port (1-65535)"
                ))
            })
        };
        let (host, container) = (
            port(m.host_port, "host_port")?,
            port(m.container_port, "container_port")?,
        );
        if !m.host_ip.is_empty() && m.host_ip != "0.0.0.0" {
            return Err(CriError::InvalidArgument(format!(
                "port_mappings[{i}].host_ip {}: binding a hostPort to one address is not supported (mappings apply on every node address)",
                m.host_ip
            )));
        }
        out.push(match k8s_cri::v1::Protocol::try_from(m.protocol) {
            Ok(k8s_cri::v1::Protocol::Tcp) => netns::HostPortMapping::tcp(host, container),
            Ok(k8s_cri::v1::Protocol::Udp) => netns::HostPortMapping::udp(host, container),
            _ => {
                return Err(CriError::InvalidArgument(format!(
                    "port_mappings[{i}].protocol {}: only TCP and UDP hostPorts are supported",
                    m.protocol
                )))
            }
        });
    }
    Ok(out)
}

/// Guest hostname: the config's, else one made from the pod name ([`crate::hostname`]).
pub fn hostname(config: &PodSandboxConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
    crate::hostname::from_pod_name(name)
}

fn cid_for(id: &str) -> u32 {
    // CIDs 0-2 are reserved and 3 is the template's; the CID only matters inside the guest
    // (the host reaches it through the VMM's own socket), so a hash of the id is enough.
    let h = u32::from_str_radix(&id[..6.min(id.len())], 16).unwrap_or(0);
    100 + h % 1_000_000
}

impl Runtime {
    /// RunPodSandbox: returns the new sandbox id once its agent is configured.
    pub async fn run_pod_sandbox(
        self: &Arc<Self>,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, CriError> {
        validate_config(Some(&config))?;
        let name = sandbox_name(&config);
        if let Some(other) = self.state.sandbox_name_taken(&name) {
            return Err(CriError::AlreadyExists(format!(
                "sandbox name {name:?} is reserved for {other}"
            )));
        }
        let id = new_id();
        let lock = self.sandbox_lock(&id);
        let _guard = lock.lock().await;
        let mut rec = SandboxRecord {
            id: id.clone(),
            config,
            runtime_handler,
            state: SandboxState::NotReady,
            created_at: now_ns(),
            ip: None,
            vmm: None,
            images: vec![],
            volumes: vec![],
        };
        self.state.put_sandbox(&rec)?;
        match self.start_sandbox(&mut rec).await {
            Ok(()) => Ok(id),
            Err(e) => {
                tracing::warn!("sandbox {id} failed to start: {e}");
                self.teardown(&rec).await;
                let _ = self.state.delete_sandbox(&id);
                let _ = std::fs::remove_dir_all(self.state.sandbox_dir(&id));
                Err(e)
            }
        }
    }

    async fn start_sandbox(self: &Arc<Self>, rec: &mut SandboxRecord) -> Result<(), CriError> {
        let id = rec.id.clone();
        let node = self.node_network()?;
        let node2 = node.clone();
        let id2 = id.clone();
        let pod = tokio::task::spawn_blocking(move || node2.attach(&id2))
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?
            .map_err(|e| CriError::Internal(format!("pod network: {}", chain(&e))))?;
        rec.ip = Some(pod.ip.to_string());
        self.state.put_sandbox(rec)?;
        let ports = host_ports(&rec.config)?;
        if !ports.is_empty() {
            let (node2, id2) = (node.clone(), id.clone());
            tokio::task::spawn_blocking(move || node2.add_host_ports(&id2, &ports))
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?
                .map_err(|e| CriError::FailedPrecondition(format!("hostPort: {}", chain(&e))))?;
        }

        let mem_mib = guest_mem_mib(&rec.config);
        let spec = VmSpec {
            dir: self.state.sandbox_dir(&id),
            mem_mib,
            cid: cid_for(&id),
            net: pod.tap_name().map(|t| (t.to_string(), pod.mac.to_string())),
        };
        let (child, from_template) = match self.template(mem_mib).await {
            Ok(t) => (vm::spawn_restore(&self.opts.vm, &t, &spec)?, true),
            Err(why) => {
                tracing::warn!("no template for {mem_mib} MiB ({why}); cold boot");
                (vm::spawn_cold(&self.opts.vm, &spec)?, false)
            }
        };
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let start_time = vm::start_time(pid).unwrap_or(0);
        rec.vmm = Some(VmmInfo {
            pid,
            start_time,
            api_socket: spec.api_socket(),
            vsock_socket: spec.vsock_socket(),
            console: spec.console(),
            mem_mib,
            from_template,
            disk_slots: self.opts.vm.disk_slots,
            volume_slots: self.opts.vm.volume_slots,
        });
        self.state.put_sandbox(rec)?;
        self.watch_child(id.clone(), pid, child);
        if let Some(parent) = rec
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .filter(|p| !p.is_empty())
        {
            for failure in vm::join_cgroup(parent, pid) {
                tracing::warn!("sandbox {id}: VMM not moved into cgroup {failure}");
            }
        }

        let log = spec.dir.join("vmm.log");
        let mut agent = connect_agent_while(&spec.vsock_socket(), AGENT_TIMEOUT, || {
            if vm::alive(pid, start_time) {
                return Ok(());
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(CriError::Unavailable(format!(
                "kennel-vmm exited before its agent answered: {}",
                tail.join(" | ")
            )))
        })
        .await?;
        let dns = rec.config.dns_config.clone().unwrap_or_default();
        let mut seed = vec![0u8; 64];
        crate::state::fill_random(&mut seed);
        let req = pb::CreateSandboxRequest {
            hostname: hostname(&rec.config),
            dns: Some(pb::DnsConfig {
                servers: dns.servers,
                searches: dns.searches,
                options: dns.options,
            }),
            hosts: vec![],
            interfaces: if spec.net.is_some() {
                vec![pb::Interface {
                    name: "eth0".into(),
                    mac: pod.mac.to_string(),
                    address: pod.ip.to_string(),
                    prefix_len: u32::from(pod.prefix_len),
                    mtu: 0,
                    gateway: pod.gateway.to_string(),
                    routes: vec![],
                }]
            } else {
                vec![]
            },
            clock_unix_nanos: now_ns() as u64,
            random_seed: seed,
        };
        agent
            .create_sandbox(req)
            .await
            .map_err(|s| agent_error("CreateSandbox", s))?;
        self.agents.lock().await.insert(id.clone(), agent);
        rec.state = SandboxState::Ready;
        self.state.put_sandbox(rec)?;
        Ok(())
    }

    /// The template for `mem_mib` (built once; a failure is remembered and means cold boots).
    async fn template(&self, mem_mib: u64) -> Result<std::path::PathBuf, String> {
        let mut templates = self.templates.lock().await;
        if let Some(t) = templates.get(&mem_mib) {
            return t.clone();
        }
        let t = vm::ensure_template(&self.opts.vm, mem_mib)
            .await
            .map_err(|e| chain(&e));
        templates.insert(mem_mib, t.clone());
        t
    }

    /// Builds the templates for `sizes` (MiB) now rather than at the first pod of each size,
    /// recording progress in [`templates_status_path`] (`kennel up` prints it).
    pub async fn prewarm(self: Arc<Self>, sizes: Vec<u64>) {
        let path = templates_status_path(&self.opts.state_dir);
        let mut status: Vec<serde_json::Value> = Vec::new();
        for mib in sizes {
            let started = std::time::Instant::now();
            status.push(serde_json::json!({"memMiB": mib, "state": "building"}));
            write_templates_status(&path, &status);
            let r = self.template(mib).await;
            let secs = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            let entry = match &r {
                Ok(_) => serde_json::json!({"memMiB": mib, "state": "ready", "seconds": secs}),
                Err(e) => {
                    serde_json::json!({"memMiB": mib, "state": "failed", "seconds": secs, "error": e})
                }
            };
            match &r {
                Ok(_) => tracing::info!("template for {mib} MiB ready after {secs} s"),
                Err(e) => tracing::warn!("template for {mib} MiB failed after {secs} s: {e}"),
            }
            if let Some(last) = status.last_mut() {
                *last = entry;
            }
            write_templates_status(&path, &status);
        }
    }

    /// Reaps a VMM child of this process and marks its sandbox when it exits.
    fn watch_child(self: &Arc<Self>, id: String, pid: i32, mut child: tokio::process::Child) {
        let rt = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::info!("sandbox {id}: VMM {pid} exited: {status:?}");
            rt.vmm_exited(&id, pid).await;
        });
    }

    /// Watches a VMM this process did not start (recovered after a restart) by polling.
    fn watch_pid(self: &Arc<Self>, id: String, pid: i32, started: u64) {
        let rt = self.clone();
        tokio::spawn(async move {
            while vm::alive(pid, started) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            rt.vmm_exited(&id, pid).await;
        });
    }

    /// A sandbox's VMM is gone: the sandbox turns NOTREADY and its containers EXITED.
    pub async fn vmm_exited(&self, id: &str, pid: i32) {
        self.forget_agent(id).await;
        let current = matches!(self.state.sandbox(id), Ok(Some(r)) if r.vmm.as_ref().map(|v| v.pid) == Some(pid));
        if !current {
            return;
        }
        let _ = self.state.update_sandbox(id, |r| {
            r.state = SandboxState::NotReady;
            r.vmm = None;
        });
        for c in self.state.containers_of(id) {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                let _ = self.state.update_container(&c.id, |c| {
                    c.state = ContainerState::Exited;
                    c.finished_at = now_ns();
                    if c.exit_code == 0 {
                        c.exit_code = 255;
                    }
                    c.reason = "Error".into();
                    c.message = "the pod VM exited".into();
                });
            }
        }
    }

    /// Kills the VM (volume disks synced and unmounted, DestroySandbox, then SIGKILL) and frees
    /// the pod network. Idempotent.
    async fn teardown(&self, rec: &SandboxRecord) {
        if let Some(v) = &rec.vmm {
            if vm::alive(v.pid, v.start_time) {
                // What containers wrote reaches the host files before the VM goes.
                self.unmount_volumes(rec).await;
                let agent = self.agents.lock().await.get(&rec.id).cloned();
                if let Some(mut a) = agent {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(20),
                        a.destroy_sandbox(pb::Empty {}),
                    )
                    .await;
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while vm::alive(v.pid, v.start_time) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                vm::signal(v.pid, v.start_time, nix::sys::signal::Signal::SIGKILL);
                while vm::alive(v.pid, v.start_time) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        self.forget_agent(&rec.id).await;
        if let Ok(node) = self.node_network() {
            let id = rec.id.clone();
            let r = tokio::task::spawn_blocking(move || node.detach(&id)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!("sandbox {}: releasing network: {}", rec.id, chain(&e));
            }
        }
    }

    /// StopPodSandbox: kills its containers and VM, frees its network. Unknown ids are fine.
    pub async fn stop_pod_sandbox(self: &Arc<Self>, id: &str) -> Result<(), CriError> {
        let Some(rec) = self.state.sandbox(id)? else {
            return Ok(());
        };
        let lock = self.sandbox_lock(&rec.id);
        let _guard = lock.lock().await;
        for c in self.state.containers_of(&rec.id) {
            if c.state == ContainerState::Running {
                let _ = self.kill_container(&c.id).await;
            }
        }
        let rec = self.state.sandbox(&rec.id)?.unwrap_or(rec);
        self.teardown(&rec).await;
        if let Some(v) = &rec.vmm {
            self.vmm_exited(&rec.id, v.pid).await;
        }
        self.state.update_sandbox(&rec.id, |r| {
            r.state = SandboxState::NotReady;
            r.vmm = None;
        })?;
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, removes its containers and files. Idempotent.
    pub async fn remove_pod_sandbox(self: &Arc<Self>, id: &str) -> Result<(), CriError> {
        let Some(rec) = self.state.sandbox(id)? else {
            return Ok(());
        };
        if rec.state == SandboxState::Ready || rec.vmm.is_some() {
            self.stop_pod_sandbox(&rec.id).await?;
        }
        let lock = self.sandbox_lock(&rec.id);
        let _guard = lock.lock().await;
        for c in self.state.containers_of(&rec.id) {
            self.forget_container(&c.id);
            self.state.delete_container(&c.id)?;
        }
        let dir = self.state.sandbox_dir(&rec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(CriError::Internal(format!(
                    "removing {}: {e}",
                    dir.display()
                )));
            }
        }
        self.state.delete_sandbox(&rec.id)?;
        drop(_guard);
        self.drop_lock(&rec.id);
        Ok(())
    }

    /// Re-attaches to the VMs of sandboxes that were running when kennel-cri stopped.
    pub async fn recover(self: &Arc<Self>) {
        for rec in self.state.sandboxes() {
            let Some(v) = rec.vmm.clone() else { continue };
            if !vm::alive(v.pid, v.start_time) {
                tracing::info!("sandbox {}: VMM {} is gone", rec.id, v.pid);
                self.vmm_exited(&rec.id, v.pid).await;
                continue;
            }
            tracing::info!("sandbox {}: re-attaching to VMM {}", rec.id, v.pid);
            self.watch_pid(rec.id.clone(), v.pid, v.start_time);
            if rec.state != SandboxState::Ready {
                continue;
            }
            match connect_agent(&v.vsock_socket, Duration::from_secs(30)).await {
                Ok(mut agent) => {
                    self.agents
                        .lock()
                        .await
                        .insert(rec.id.clone(), agent.clone());
                    for c in self.state.containers_of(&rec.id) {
                        if c.state == ContainerState::Running {
                            self.open_log(&c);
                            let pumps = self.attach_output(&mut agent, &c.id).await;
                            self.watch_container(c.id.clone(), rec.id.clone(), Some(pumps));
                        }
                    }
                }
                Err(e) => tracing::warn!("sandbox {}: agent: {e}", rec.id),
            }
        }
    }

    /// Checks the VMM of a sandbox this process does not reap (recovered ones) is alive.
    pub async fn refresh(&self, rec: &SandboxRecord) {
        if let Some(v) = &rec.vmm {
            if v.start_time != 0 && !vm::alive(v.pid, v.start_time) {
                self.vmm_exited(&rec.id, v.pid).await;
            }
        }
    }
}

/// Where [`Runtime::prewarm`] records the templates it builds: a JSON array of
/// `{"memMiB", "state": "building"|"ready"|"failed", "seconds", "error"}`.
pub fn templates_status_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("templates.json")
}

fn write_templates_status(path: &std::path::Path, status: &[serde_json::Value]) {
    let body = serde_json::to_vec(status).unwrap_or_default();
    if let Err(e) = crate::state::write_atomic(path, &body) {
        tracing::warn!("writing {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxContainerResources, LinuxPodSandboxConfig, PodSandboxMetadata};

    #[test]
    fn metadata_fields_are_required_by_name() {
        let mut c = PodSandboxConfig::default();
        assert!(validate_config(Some(&c))
            .unwrap_err()
            .to_string()
            .contains("metadata"));
        c.metadata = Some(PodSandboxMetadata {
            name: "a".into(),
            namespace: "".into(),
            uid: "u".into(),
            attempt: 0,
        });
        let e = validate_config(Some(&c)).unwrap_err().to_string();
        assert!(e.contains("namespace"), "{e}");
    }

    #[test]
    fn hostname_is_the_configs_or_a_valid_one_from_the_name() {
        let name = format!("{}_x", "p".repeat(66));
        let mut c = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        assert!(validate_config(Some(&c)).is_ok(), "no hostname is fine");
        assert_eq!(hostname(&c), "p".repeat(63));
        c.hostname = "web-0".into();
        assert_eq!(hostname(&c), "web-0");
        c.hostname = name;
        let e = validate_config(Some(&c)).unwrap_err();
        assert!(matches!(e, CriError::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains("config.hostname"), "{e}");
    }

    #[test]
    fn host_ports_from_port_mappings() {
        use k8s_cri::v1::{PortMapping, Protocol};
        let pm = |protocol: Protocol, host_port, container_port, host_ip: &str| PortMapping {
            protocol: protocol as i32,
            host_port,
            container_port,
            host_ip: host_ip.into(),
        };
        let mut c = PodSandboxConfig {
            port_mappings: vec![
                pm(Protocol::Tcp, 8080, 80, ""),
                pm(Protocol::Udp, 5353, 53, "0.0.0.0"),
                pm(Protocol::Tcp, 0, 9000, ""),
            ],
            ..Default::default()
        };
        let got = host_ports(&c).unwrap();
        assert_eq!(
            got,
            vec![
                netns::HostPortMapping::tcp(8080, 80),
                netns::HostPortMapping::udp(5353, 53)
            ]
        );
        for (bad, word) in [
            (pm(Protocol::Sctp, 1, 1, ""), "protocol"),
            (pm(Protocol::Tcp, 70000, 1, ""), "host_port"),
            (pm(Protocol::Tcp, 80, -1, ""), "container_port"),
            (pm(Protocol::Tcp, 80, 80, "10.0.0.1"), "host_ip"),
        ] {
            c.port_mappings = vec![bad];
            let e = host_ports(&c).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn memory_is_limit_plus_overhead_rounded() {
        let mut c = PodSandboxConfig::default();
        assert_eq!(guest_mem_mib(&c), DEFAULT_MEM_MIB);
        c.linux = Some(LinuxPodSandboxConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 100 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        // 100 + 64 = 164 → 192
        assert_eq!(guest_mem_mib(&c), 192);
        assert!(cid_for("ffffff00") >= 100);
    }
}
