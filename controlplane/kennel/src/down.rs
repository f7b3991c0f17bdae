//! `kennel down`: stops a running `kennel up` (SIGTERM, as Ctrl-C would), then removes every pod
//! VM and the node network by running kennel-cri once in teardown mode with the arguments
//! `kennel up` recorded, and the service proxy's nftables table, so nothing is left: no VMM,
//! tap, IP, NAT or service rule, bridge.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where `kennel up` records its pid.
pub fn pid_file(data: &Path) -> PathBuf {
    data.join("kennel.pid")
}

/// Where `kennel up` records how it runs kennel-cri (program, then arguments; JSON).
pub fn cri_command_file(data: &Path) -> PathBuf {
    data.join("cri/command.json")
}

/// The pid of a live `kennel up` on `data`, if any.
pub fn running_pid(data: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(data))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmd)
        .contains("kennel")
        .then_some(pid)
}

/// `kennel down` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// State directory of the cluster.
    #[arg(long, default_value = "/var/lib/kennel")]
    pub data_dir: PathBuf,
}

/// Stops the cluster and removes its pod VMs and node network.
pub async fn run(args: DownArgs) -> anyhow::Result<()> {
    let data = &args.data_dir;
    if let Some(pid) = running_pid(data) {
        println!("stopping kennel up (pid {pid})");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .with_context(|| format!("signalling pid {pid}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while running_pid(data).is_some() && Path::new(&format!("/proc/{pid}")).exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "kennel up (pid {pid}) did not stop within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let file = cri_command_file(data);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no runtime state in {} (nothing to remove)", data.display());
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let cmd: Vec<String> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let (program, rest) = cmd.split_first().context("empty kennel-cri command")?;
    let status = tokio::process::Command::new(program)
        .args(rest)
        .arg("--teardown")
        .status()
        .await
        .with_context(|| format!("running {program} --teardown"))?;
    anyhow::ensure!(status.success(), "{program} --teardown failed ({status})");
    // The service proxy's table lives in the same namespace as the node network.
    let netns = rest
        .iter()
        .position(|a| a == "--netns")
        .and_then(|i| rest.get(i + 1))
        .cloned();
    let mut proxy = kennel_proxy::ProxyConfig::new("");
    proxy.netns = netns;
    kennel_proxy::cleanup(&proxy).context("removing the service proxy's nftables table")?;
    let _ = std::fs::remove_file(pid_file(data));
    println!(
        "kennel is down: pod VMs and the node network removed; objects stay in {}",
        data.display()
    );
    Ok(())
}
