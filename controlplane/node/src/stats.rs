//! Resource usage for `kubectl top` and autoscaling: kubelet's Summary API (`/stats/summary`,
//! the subset metrics consumers read: node, pod and container CPU and memory).
//!
//! CRI reports cumulative CPU time; the rate (`usageNanoCores`) needs two samples. Each request
//! takes a fresh sample and compares it with the oldest kept sample of the last minute (so a
//! scraper every 15 s sees a 15 s window); with no earlier sample it samples again after a second.
//! The node's own figures come from the host's `/proc/stat` and `/proc/meminfo`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::cri::{CriClient, CriClientError};
use k8s_cri::v1 as cri;

/// How long samples are kept.
const KEEP: Duration = Duration::from_secs(60);
/// The shortest window a rate is computed over.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Errors of a stats request.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The runtime did not answer.
    #[error("runtime: {0}")]
    Cri(#[from] CriClientError),
}

/// Cumulative counters at one instant.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    wall: chrono::DateTime<chrono::Utc>,
    /// Container CPU time by (sandbox id, container name), nanoseconds.
    containers: HashMap<(String, String), u64>,
    /// Host CPU time (non-idle), nanoseconds.
    node_cpu: u64,
}

/// The sampler state shared by requests.
#[derive(Clone, Default)]
pub struct Stats {
    samples: Arc<Mutex<Vec<Sample>>>,
}

/// One usage figure with its rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    /// Cumulative CPU time (ns).
    pub total_ns: u64,
    /// Average rate over the window (nanocores), when a window exists.
    pub nano_cores: Option<u64>,
}

/// The rate between two cumulative readings `window` apart.
pub fn rate(prev: u64, now: u64, window: Duration) -> Option<u64> {
    let w = window.as_nanos();
    if w == 0 || now < prev {
        return None;
    }
    Some(((now - prev) as u128 * 1_000_000_000 / w) as u64)
}

/// Non-idle CPU time of the host from `/proc/stat` text (USER_HZ = 100), in nanoseconds.
pub fn host_cpu_ns(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user).
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Some(busy * 10_000_000)
}

/// `(working set, available, total)` bytes of the host from `/proc/meminfo` text.
pub fn host_memory(meminfo: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    Some((total.saturating_sub(avail), avail, total))
}

fn cpu_of(c: Option<&cri::CpuUsage>) -> u64 {
    c.and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value)
}

fn take_sample(stats: &[cri::PodSandboxStats]) -> Sample {
    let mut containers = HashMap::new();
    for p in stats {
        let id = p
            .attributes
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default();
        for c in p
            .linux
            .as_ref()
            .map(|l| l.containers.as_slice())
            .unwrap_or_default()
        {
            let name = c
                .attributes
                .as_ref()
                .and_then(|a| a.metadata.as_ref())
                .map(|m| m.name.clone())
                .unwrap_or_default();
            containers.insert((id.clone(), name), cpu_of(c.cpu.as_ref()));
        }
    }
    let node_cpu = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| host_cpu_ns(&t))
        .unwrap_or(0);
    Sample {
        at: Instant::now(),
        wall: chrono::Utc::now(),
        containers,
        node_cpu,
    }
}

fn cpu_json(c: Cpu, time: &str) -> Value {
    let mut v = json!({"time": time, "usageCoreNanoSeconds": c.total_ns});
    if let Some(n) = c.nano_cores {
        v["usageNanoCores"] = json!(n);
    }
    v
}

fn mem_json(m: Option<&cri::MemoryUsage>, time: &str) -> Value {
    let val = |x: Option<&cri::UInt64Value>| x.map(|v| v.value);
    let mut v = json!({"time": time});
    if let Some(m) = m {
        if let Some(w) = val(m.working_set_bytes.as_ref()) {
            v["workingSetBytes"] = json!(w);
        }
        if let Some(u) = val(m.usage_bytes.as_ref()) {
            v["usageBytes"] = json!(u);
        }
        if let Some(a) = val(m.available_bytes.as_ref()) {
            v["availableBytes"] = json!(a);
        }
    }
    v
}

impl Stats {
    /// The Summary of node `node_name`.
    pub async fn summary(&self, cri: &CriClient, node_name: &str) -> Result<Value, StatsError> {
        let (stats, now, prev) = self.sample_with_window(cri).await?;
        let window = prev.as_ref().map(|p| now.at - p.at);
        let time = now.wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut pods = Vec::new();
        for p in &stats {
            let Some(attrs) = p.attributes.as_ref() else {
                continue;
            };
            let meta = attrs.metadata.clone().unwrap_or_default();
            let mut containers = Vec::new();
            let mut pod_cpu = Cpu::default();
            let mut rates = Some(0u64);
            for c in p
                .linux
                .as_ref()
                .map(|l| l.containers.as_slice())
                .unwrap_or_default()
            {
                let name = c
                    .attributes
                    .as_ref()
                    .and_then(|a| a.metadata.as_ref())
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let total = cpu_of(c.cpu.as_ref());
                let key = (attrs.id.clone(), name.clone());
                let nano_cores = match (&prev, window) {
                    (Some(prev), Some(w)) => {
                        prev.containers.get(&key).and_then(|&b| rate(b, total, w))
                    }
                    _ => None,
                };
                rates = rates.zip(nano_cores).map(|(a, b)| a + b);
                pod_cpu.total_ns += total;
                let cpu = Cpu {
                    total_ns: total,
                    nano_cores,
                };
                containers.push(json!({
                    "name": name,
                    "cpu": cpu_json(cpu, &time),
                    "memory": mem_json(c.memory.as_ref(), &time),
                }));
            }
            pod_cpu.nano_cores = if containers.is_empty() { None } else { rates };
            let mem = p.linux.as_ref().and_then(|l| l.memory.as_ref());
            pods.push(json!({
                "podRef": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
                "containers": containers,
                "cpu": cpu_json(pod_cpu, &time),
                "memory": mem_json(mem, &time),
            }));
        }
        let node_cpu = Cpu {
            total_ns: now.node_cpu,
            nano_cores: match (&prev, window) {
                (Some(p), Some(w)) => rate(p.node_cpu, now.node_cpu, w),
                _ => None,
            },
        };
        let mut node_mem = json!({"time": time});
        if let Some((ws, avail, _)) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| host_memory(&t))
        {
            node_mem["workingSetBytes"] = json!(ws);
            node_mem["usageBytes"] = json!(ws);
            node_mem["availableBytes"] = json!(avail);
        }
        Ok(json!({
            "node": {"nodeName": node_name, "cpu": cpu_json(node_cpu, &time), "memory": node_mem},
            "pods": pods,
            "window": window.map(|w| format!("{}ms", w.as_millis())),
        }))
    }

    /// A fresh sample, the runtime's stats it came from, and the earlier sample to compare with.
    async fn sample_with_window(
        &self,
        cri: &CriClient,
    ) -> Result<(Vec<cri::PodSandboxStats>, Sample, Option<Sample>), StatsError> {
        let mut samples = self.samples.lock().await;
        samples.retain(|s| s.at.elapsed() <= KEEP);
        let mut stats = cri.sandbox_stats().await?;
        let mut now = take_sample(&stats);
        if !samples.iter().any(|s| now.at - s.at >= MIN_WINDOW) {
            samples.push(now);
            tokio::time::sleep(MIN_WINDOW).await;
            stats = cri.sandbox_stats().await?;
            now = take_sample(&stats);
        }
        let prev = samples
            .iter()
            .find(|s| now.at - s.at >= MIN_WINDOW)
            .cloned();
        samples.push(now.clone());
        Ok((stats, now, prev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(
            rate(1_000_000_000, 3_000_000_000, Duration::from_secs(2)),
            Some(1_000_000_000)
        );
        assert_eq!(
            rate(0, 250_000_000, Duration::from_secs(1)),
            Some(250_000_000)
        );
        assert_eq!(
            rate(5, 4, Duration::from_secs(1)),
            None,
            "a counter reset is no rate"
        );
        assert_eq!(rate(0, 1, Duration::ZERO), None);
    }

    #[test]
    fn host_figures() {
        let stat = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 1 2 3 4\n";
        // user+nice+system+irq+softirq+steal = 131 ticks = 1.31 s.
        assert_eq!(host_cpu_ns(stat), Some(1_310_000_000));
        let mem = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    600 kB\n";
        assert_eq!(
            host_memory(mem),
            Some((400 * 1024, 600 * 1024, 1000 * 1024))
        );
        assert_eq!(host_memory("MemTotal: 1 kB\n"), None);
    }
}
