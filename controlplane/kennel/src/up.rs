//! `kennel up`: a whole single-node cluster from one command, built in this order: data dir →
//! API server (CA, certificates, store, admin kubeconfig) → node credentials → kennel-cri (a
//! supervised child process) → node agent (a supervised task, a kube-rs client over HTTPS like
//! any other). Ctrl-C or SIGTERM stops the control plane and kennel-cri; pod VMs keep running
//! and the next `kennel up` adopts them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use kennel_apiserver::{ApiServerConfig, StoreConfig};
use kennel_node::agent::AgentConfig;
use kennel_node::node::NodeConfig;
use kennel_node::server::LogServerConfig;
use tokio::sync::watch;

use crate::supervise::{self, ChildSpec};

/// `kennel up` settings (the CLI flags).
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// State directory (store, pki, runtime state, images, pod logs).
    #[arg(long, default_value = "/var/lib/kennel")]
    pub data_dir: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's InternalIP (default: the first IPv4 address on a non-loopback interface,
    /// else the pod network gateway).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// API server listen address. Every address by default, as k3s: pods reach it through the
    /// `kubernetes` Service, whose endpoint is then the node's address (TLS and a token are
    /// required either way).
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// Use etcd at these comma-separated URLs instead of the embedded SQLite store.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The node's pod CIDR.
    #[arg(long, default_value = "10.88.0.0/16")]
    pub pod_cidr: String,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// Cluster DNS server IPs given to pods (ClusterFirst; default: the service range's tenth
    /// address, the `kube-dns` Service that kennel-dns answers behind).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The Ingress controller's plain HTTP listener ("none": no HTTP).
    #[arg(long, default_value = "0.0.0.0:80")]
    pub ingress_http: String,
    /// The Ingress controller's TLS listener ("none": no HTTPS).
    #[arg(long, default_value = "0.0.0.0:443")]
    pub ingress_https: String,
    /// Run the whole node network (bridge, taps, NAT, VMMs) and the API server inside this
    /// existing network namespace.
    #[arg(long)]
    pub netns: Option<String>,
    /// Maximum pods on the node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Resources held back from pods, e.g. `cpu=100m,memory=256Mi`.
    #[arg(long, default_value = "cpu=100m,memory=256Mi")]
    pub system_reserved: String,
    /// Port of the node agent's HTTPS API (logs).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Registry host:port reached over plain HTTP (repeatable).
    #[arg(long = "plain-http")]
    pub plain_http: Vec<String>,
    /// Extra CA certificate (PEM) trusted for registries.
    #[arg(long)]
    pub registry_ca: Option<PathBuf>,
    /// Registry mirrors, credentials and CAs, k3s-style (default: /etc/kennel/registries.yaml
    /// when it exists).
    #[arg(long)]
    pub registries_config: Option<PathBuf>,
    /// Guest kernel (uncompressed vmlinux).
    #[arg(long, env = "KENNEL_VMLINUX")]
    pub kernel: PathBuf,
    /// Static kennel-agent binary (the guest's /init).
    #[arg(long, env = "KENNEL_AGENT")]
    pub agent: PathBuf,
    /// kennel-cri binary (default: beside this executable).
    #[arg(long)]
    pub cri_bin: Option<PathBuf>,
    /// kennel-vmm binary (default: beside this executable).
    #[arg(long)]
    pub vmm_bin: Option<PathBuf>,
    /// Template cache directory.
    #[arg(long, default_value = "/var/cache/kennel/templates")]
    pub template_cache: PathBuf,
    /// Where to write the admin kubeconfig.
    #[arg(long, default_value = "/etc/kennel/admin.kubeconfig")]
    pub write_kubeconfig: PathBuf,
    /// Do not also write ~/.kube/config when it is absent.
    #[arg(long)]
    pub no_home_kubeconfig: bool,
    /// Audit log of the API server (JSON lines, one audit.k8s.io/v1 Event per request).
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// Audit policy (audit.k8s.io/v1 Policy; Metadata for every request when unset).
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
}

fn beside_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Parses `cpu=100m,memory=256Mi` into (millicores, bytes).
pub fn parse_reserved(s: &str) -> anyhow::Result<(u64, u64)> {
    let (mut cpu, mut mem) = (0, 0);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--system-reserved: {part:?} is not key=value"))?;
        let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string());
        match k {
            "cpu" => cpu = kennel_node::pod::spec::quantity_millis(&q).max(0) as u64,
            "memory" => mem = kennel_node::pod::spec::quantity_bytes(&q).max(0) as u64,
            other => anyhow::bail!("--system-reserved: unknown resource {other:?} (cpu, memory)"),
        }
    }
    Ok((cpu, mem))
}

/// The first IPv4 address of a non-loopback interface.
fn first_ipv4() -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name == "lo" {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Some(sin.ip().to_string());
        }
    }
    None
}

/// The pod network's gateway: the CIDR's first address (kennel-cri puts it on the bridge).
fn gateway(cidr: &str) -> Option<String> {
    let net: ipnet::Ipv4Net = cidr.parse().ok()?;
    net.hosts().next().map(|ip| ip.to_string())
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The node's bearer token, created once (`<data>/pki/node.token`), and the static token file
/// the API server reads it from.
fn node_credentials(data: &Path, node: &str) -> anyhow::Result<(String, PathBuf)> {
    let pki = data.join("pki");
    std::fs::create_dir_all(&pki)?;
    let path = pki.join("node.token");
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = random_token();
            kennel_apiserver::pki::write_atomic(&path, t.as_bytes())?;
            t
        }
    };
    let file = pki.join("tokens.csv");
    let line = format!("{token},system:node:{node},system:node:{node},\"system:nodes\"\n");
    kennel_apiserver::pki::write_atomic(&file, line.as_bytes())?;
    Ok((token, file))
}

/// A kube client config for a component with its own identity: a client certificate for `user`
/// kept in the pki directory, and `pki/<stem>.kubeconfig` (for running it alone).
async fn component_config(
    api: &kennel_apiserver::RunningApiServer,
    stem: &str,
    user: &str,
) -> anyhow::Result<kube::Config> {
    let pki_dir = api
        .kubeconfig
        .parent()
        .map(|d| d.join("pki"))
        .context("the API server's data directory")?;
    let id = kennel_apiserver::pki::client::ClientIdentity {
        stem,
        user,
        group: None,
    };
    let path = kennel_apiserver::pki::client::write_client_kubeconfig(
        &pki_dir,
        &id,
        &api.url,
        &api.ca_pem,
    )
    .with_context(|| format!("credentials of {user}"))?;
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("{}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("{}", path.display()))
}

/// A kube client for the node agent: the cluster CA, the node's token.
fn node_kubeconfig(
    url: &str,
    ca_pem: &str,
    token: &str,
    path: &Path,
) -> anyhow::Result<kube::config::Kubeconfig> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "kennel", "cluster": {"server": url, "certificate-authority-data": b64.encode(ca_pem)}}],
        "users": [{"name": "node", "user": {"token": token}}],
        "contexts": [{"name": "node", "context": {"cluster": "kennel", "user": "node"}}],
    });
    kennel_apiserver::pki::write_atomic(path, serde_json::to_string_pretty(&kc)?.as_bytes())?;
    let kc: kube::config::Kubeconfig = serde_json::from_value(kc)?;
    Ok(kc)
}

fn write_user_kubeconfigs(args: &UpArgs, admin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = std::fs::read(admin).with_context(|| format!("reading {}", admin.display()))?;
    let mut out = vec![];
    let mut write = |p: &Path| -> anyhow::Result<()> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        kennel_apiserver::pki::write_atomic(p, &text)?;
        out.push(p.to_path_buf());
        Ok(())
    };
    write(&args.write_kubeconfig)?;
    if !args.no_home_kubeconfig {
        if let Some(home) = std::env::var_os("HOME") {
            let p = Path::new(&home).join(".kube/config");
            if !p.exists() {
                write(&p)?;
            }
        }
    }
    Ok(out)
}

/// kennel-proxy for this node: NodePorts on the node address, the pod CIDR as the cluster's,
/// nft in this process's namespace (`--netns` already moved the whole process there).
pub fn proxy_config(
    node: &str,
    node_ip: &str,
    pod_cidr: ipnet::Ipv4Net,
) -> anyhow::Result<kennel_proxy::ProxyConfig> {
    let mut cfg = kennel_proxy::ProxyConfig::new(node);
    cfg.node_ips = vec![node_ip
        .parse()
        .with_context(|| format!("node IP {node_ip}"))?];
    cfg.cluster_cidr = Some(pod_cidr);
    Ok(cfg)
}

/// Runs the cluster until Ctrl-C / SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data = &args.data_dir;
    for d in ["", "cri", "images", "pods", "logs"] {
        std::fs::create_dir_all(data.join(d))
            .with_context(|| format!("creating {}", data.join(d).display()))?;
    }
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let node_ip = args
        .node_ip
        .clone()
        .or_else(first_ipv4)
        .or_else(|| gateway(&args.pod_cidr))
        .unwrap_or_else(|| "127.0.0.1".into());
    if let Some(pid) = crate::down::running_pid(data) {
        anyhow::bail!(
            "kennel up is already running on {} (pid {pid})",
            data.display()
        );
    }
    kennel_apiserver::pki::write_atomic(
        &crate::down::pid_file(data),
        std::process::id().to_string().as_bytes(),
    )?;
    let (reserved_cpu, reserved_mem) = parse_reserved(&args.system_reserved)?;
    let pod_cidr: ipnet::Ipv4Net = args
        .pod_cidr
        .parse()
        .with_context(|| format!("--pod-cidr {}", args.pod_cidr))?;
    let service_cidr: ipnet::Ipv4Net = args
        .service_cidr
        .parse()
        .with_context(|| format!("--service-cidr {}", args.service_cidr))?;
    // Pods get the kube-dns Service's address as their nameserver; kennel-dns answers behind it
    // on the pod network's gateway.
    let dns_ip = crate::addons::default_dns_ip(&service_cidr)?;
    let cluster_dns = if args.cluster_dns.is_empty() {
        vec![dns_ip.to_string()]
    } else {
        args.cluster_dns.clone()
    };
    let pod_gateway = pod_cidr
        .hosts()
        .next()
        .with_context(|| format!("--pod-cidr {pod_cidr} has no gateway address"))?;
    let (node_token, token_file) = node_credentials(data, &node_name)?;
    let store = if args.etcd_endpoints.is_empty() {
        StoreConfig::Sqlite
    } else {
        StoreConfig::Etcd {
            endpoints: args.etcd_endpoints.clone(),
        }
    };
    let api = kennel_apiserver::start(ApiServerConfig {
        data_dir: data.clone(),
        listen: args.listen,
        store,
        tls: true,
        auth: true,
        token_file: Some(token_file),
        service_network: kennel_apiserver::services::ServiceNetwork {
            cidr: service_cidr,
            dns_ip: Some(dns_ip),
            ..Default::default()
        },
        event_ttl_secs: kennel_apiserver::events_ttl::DEFAULT_TTL.as_secs(),
        audit_log: args.audit_log_path.clone(),
        audit_policy: args.audit_policy_file.clone(),
        disable_admission_plugins: Vec::new(),
    })
    .await
    .context("starting the API server")?;
    let kubeconfigs = write_user_kubeconfigs(&args, &api.kubeconfig)?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let socket = data.join("cri/cri.sock");
    let mut cri_args: Vec<String> = vec![
        "--socket".into(),
        socket.display().to_string(),
        "--state-dir".into(),
        data.join("cri").display().to_string(),
        "--image-store".into(),
        data.join("images").display().to_string(),
        "--template-cache".into(),
        args.template_cache.display().to_string(),
        "--kernel".into(),
        args.kernel.display().to_string(),
        "--agent".into(),
        args.agent.display().to_string(),
        "--vmm".into(),
        args.vmm_bin
            .clone()
            .unwrap_or_else(|| beside_exe("kennel-vmm"))
            .display()
            .to_string(),
        "--pod-cidr".into(),
        args.pod_cidr.clone(),
        // The template of pods without memory limits, built now: the first such pod restores
        // it instead of waiting for a boot, and this command shows the boot's progress.
        "--prewarm-mib".into(),
        cri_shim::runtime::DEFAULT_MEM_MIB.to_string(),
    ];
    if let Some(ns) = &args.netns {
        cri_args.extend(["--netns".into(), ns.clone()]);
    }
    for h in &args.plain_http {
        cri_args.extend(["--plain-http".into(), h.clone()]);
    }
    if let Some(ca) = &args.registry_ca {
        cri_args.extend(["--registry-ca".into(), ca.display().to_string()]);
    }
    let default_registries = Path::new("/etc/kennel/registries.yaml");
    if let Some(file) = args.registries_config.clone().or_else(|| {
        default_registries
            .is_file()
            .then(|| default_registries.into())
    }) {
        // Checked here too, so a mistake is one clear error instead of a restarting kennel-cri.
        cri_shim::registries::Registries::load(&file)?;
        cri_args.extend(["--registries-config".into(), file.display().to_string()]);
    }
    let cri_program = args
        .cri_bin
        .clone()
        .unwrap_or_else(|| beside_exe("kennel-cri"));
    let mut command = vec![cri_program.display().to_string()];
    command.extend(cri_args.iter().cloned());
    kennel_apiserver::pki::write_atomic(
        &crate::down::cri_command_file(data),
        serde_json::to_string(&command)?.as_bytes(),
    )?;
    // A previous run's report would read as this run's.
    let _ = std::fs::remove_file(cri_shim::sandbox::templates_status_path(&data.join("cri")));
    let cri = tokio::spawn(supervise::child(
        ChildSpec {
            name: "kennel-cri",
            program: args
                .cri_bin
                .clone()
                .unwrap_or_else(|| beside_exe("kennel-cri")),
            args: cri_args,
            log: data.join("logs/kennel-cri.log"),
        },
        stop_rx.clone(),
    ));

    let kc = node_kubeconfig(
        &api.url,
        &api.ca_pem,
        &node_token,
        &data.join("pki/node.kubeconfig"),
    )?;
    let client_cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("node kubeconfig")?;
    let agent_cfg = AgentConfig {
        node: NodeConfig {
            name: node_name.clone(),
            ip: node_ip.clone(),
            pod_cidr: args.pod_cidr.clone(),
            max_pods: args.max_pods,
            reserved_memory: reserved_mem,
            reserved_cpu_millis: reserved_cpu,
            kubelet_port: args.kubelet_port,
            data_dir: data.clone(),
        },
        cri_socket: socket,
        cluster_dns,
        cluster_domain: args.cluster_domain.clone(),
        logs_root: data.join("pods"),
        resolv_conf: "/etc/resolv.conf".into(),
        volumes_dir: data.join("volumes"),
    };
    let cri_socket = agent_cfg.cri_socket.clone();
    // The node's provisioner of disk images, with its own identity.
    let provisioner_client =
        component_config(&api, "local-provisioner", "system:kennel:local-provisioner").await?;
    let provisioner = crate::node_cmd::spawn_provisioner(
        agent_cfg.provisioner(),
        provisioner_client,
        stop_rx.clone(),
    );
    let node = crate::node_cmd::spawn_agent(agent_cfg, client_cfg, stop_rx.clone());
    // The scheduler and the controller manager, clients of the API server like any other.
    let admin_cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&api.kubeconfig).context("admin kubeconfig")?,
        &Default::default(),
    )
    .await
    .context("admin kubeconfig")?;
    // Each component has its own identity (a client certificate), authorized by the bootstrap
    // RBAC policy as upstream's are; the add-ons, DNS and Ingress still act as the admin.
    let scheduler_cfg = component_config(&api, "kube-scheduler", "system:kube-scheduler").await?;
    let controllers_cfg = component_config(
        &api,
        "kube-controller-manager",
        "system:kube-controller-manager",
    )
    .await?;
    let proxy_cfg = component_config(&api, "kube-proxy", "system:kube-proxy").await?;
    let scheduler = crate::components::spawn_scheduler(scheduler_cfg, &node_name, stop_rx.clone());
    let controllers =
        crate::components::spawn_controllers(controllers_cfg, &node_name, stop_rx.clone());
    let addons = crate::components::spawn_addons(
        admin_cfg.clone(),
        crate::addons::AddonSpec {
            dns_ip,
            dns_endpoint: pod_gateway,
            api_endpoint: crate::addons::api_endpoint(api.addr, &node_ip),
        },
        stop_rx.clone(),
    );
    let route = tokio::spawn(supervise::task(
        "service route",
        stop_rx.clone(),
        move || crate::svcroute::run(service_cidr, netns::config::DEFAULT_BRIDGE.to_string()),
    ));
    let mut dns_cfg =
        kennel_dns::DnsConfig::new(vec![std::net::SocketAddr::from((pod_gateway, 53))]);
    dns_cfg.domain = args.cluster_domain.clone();
    dns_cfg.upstreams = kennel_dns::upstreams_from_resolv_conf(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    let dns = crate::components::spawn_dns(admin_cfg.clone(), dns_cfg, stop_rx.clone());
    let proxy = crate::components::spawn_proxy(
        proxy_cfg,
        proxy_config(&node_name, &node_ip, pod_cidr)?,
        stop_rx.clone(),
    );
    let mut ingress_cfg =
        kennel_ingress::IngressConfig::new(vec![node_ip.parse().context("--node-ip")?]);
    ingress_cfg.http_listen = crate::components::listener("--ingress-http", &args.ingress_http)?;
    ingress_cfg.https_listen = crate::components::listener("--ingress-https", &args.ingress_https)?;
    let ingress = crate::components::spawn_ingress(admin_cfg.clone(), ingress_cfg, stop_rx.clone());

    let pki_dir = kennel_apiserver::pki::pki_dir(data);
    let ip: std::net::IpAddr = node_ip.parse().context("--node-ip")?;
    let (cert_pem, key_pem) = kennel_apiserver::pki::issue_node_cert(&pki_dir, &node_name, &[ip])
        .context("issuing the node's serving certificate")?;
    let log_cfg = LogServerConfig {
        // All addresses: the node IP may appear only once kennel-cri has made the bridge.
        listen: SocketAddr::from(([0, 0, 0, 0], args.kubelet_port)),
        cert_pem,
        key_pem,
        client_token: kennel_apiserver::pki::read_kubelet_client_token(&pki_dir)?,
        logs_root: data.join("pods"),
        cri_socket: Some(cri_socket),
        node_name: node_name.clone(),
    };
    let logs = crate::node_cmd::spawn_log_api(log_cfg, stop_rx.clone());

    println!(
        "kennel is up: API server {} (store: {}), node {node_name} ({node_ip})",
        api.url,
        if args.etcd_endpoints.is_empty() {
            "sqlite"
        } else {
            "etcd"
        }
    );
    for k in &kubeconfigs {
        println!("  kubeconfig: {}", k.display());
    }
    println!(
        "  try: KUBECONFIG={} kubectl get nodes",
        kubeconfigs[0].display()
    );
    println!("  the first pod of each other memory size boots its template VM (30-40 s on nested KVM, ~100 ms on bare metal)");
    println!("  logs: {}", data.join("logs").display());
    let progress = tokio::spawn(show_template_progress(
        cri_shim::sandbox::templates_status_path(&data.join("cri")),
    ));

    wait_for_signal().await;
    tracing::info!("stopping the control plane (pod VMs keep running; `kennel down` removes them)");
    let _ = stop_tx.send(true);
    progress.abort();
    let _ = node.await;
    let _ = provisioner.await;
    let _ = scheduler.await;
    let _ = controllers.await;
    let _ = addons.await;
    let _ = proxy.await;
    let _ = ingress.await;
    let _ = dns.await;
    let _ = route.await;
    let _ = logs.await;
    let _ = cri.await;
    drop(api);
    Ok(())
}

/// Prints the template builds kennel-cri reports in `path` (see `--prewarm-mib`): a line when
/// one starts, every 10 s while it boots, and when it is ready or failed.
async fn show_template_progress(path: PathBuf) {
    let started = std::time::Instant::now();
    let mut last_print = None::<std::time::Instant>;
    let mut done = std::collections::BTreeSet::new();
    loop {
        let entries: Vec<serde_json::Value> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut building = false;
        for e in &entries {
            let mib = e["memMiB"].as_u64().unwrap_or(0);
            match e["state"].as_str().unwrap_or("") {
                "building" => {
                    building = true;
                    // A cached template answers within a second or two: say nothing then.
                    let due = match last_print {
                        None => started.elapsed() >= std::time::Duration::from_secs(3),
                        Some(t) => t.elapsed() >= std::time::Duration::from_secs(10),
                    };
                    if due {
                        println!(
                            "  pod VM template ({mib} MiB): booting the guest, {} s…",
                            started.elapsed().as_secs()
                        );
                        last_print = Some(std::time::Instant::now());
                    }
                }
                "ready" if done.insert(mib) && last_print.is_some() => println!(
                    "  pod VM template ({mib} MiB): ready after {} s; pods restore from it",
                    e["seconds"].as_f64().unwrap_or(0.0)
                ),
                "failed" if done.insert(mib) => println!(
                    "  pod VM template ({mib} MiB) failed, pods will cold-boot: {}",
                    e["error"].as_str().unwrap_or("")
                ),
                _ => {}
            }
        }
        if !entries.is_empty() && !building {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_parses_and_rejects() {
        assert_eq!(
            parse_reserved("cpu=100m,memory=256Mi").unwrap(),
            (100, 256 << 20)
        );
        assert_eq!(parse_reserved("").unwrap(), (0, 0));
        assert!(parse_reserved("gpu=1")
            .unwrap_err()
            .to_string()
            .contains("gpu"));
        assert!(parse_reserved("cpu").is_err());
    }

    #[test]
    fn gateway_is_first_host() {
        assert_eq!(gateway("10.88.0.0/16").as_deref(), Some("10.88.0.1"));
    }
}
