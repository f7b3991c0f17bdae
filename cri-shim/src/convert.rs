//! Records → CRI messages, and the List filters (id prefix, state, label selector).

use crate::state::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use k8s_cri::v1 as cri;
use std::collections::HashMap;

impl From<SandboxState> for cri::PodSandboxState {
    fn from(s: SandboxState) -> Self {
        match s {
            SandboxState::Ready => cri::PodSandboxState::SandboxReady,
            SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
        }
    }
}

impl From<ContainerState> for cri::ContainerState {
    fn from(s: ContainerState) -> Self {
        match s {
            ContainerState::Created => cri::ContainerState::ContainerCreated,
            ContainerState::Running => cri::ContainerState::ContainerRunning,
            ContainerState::Exited => cri::ContainerState::ContainerExited,
            ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
        }
    }
}

/// Whether every `selector` pair is among `labels`.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A sandbox as ListPodSandbox returns it.
pub fn pod_sandbox(r: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri::PodSandboxState::from(r.state) as i32,
        created_at: r.created_at,
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// Whether a sandbox passes a ListPodSandbox filter.
pub fn sandbox_matches(r: &SandboxRecord, f: Option<&cri::PodSandboxFilter>) -> bool {
    let Some(f) = f else { return true };
    if !f.id.is_empty() && !r.id.starts_with(&f.id) {
        return false;
    }
    if let Some(s) = &f.state {
        if cri::PodSandboxState::from(r.state) as i32 != s.state {
            return false;
        }
    }
    labels_match(&r.config.labels, &f.label_selector)
}

/// A sandbox's status.
pub fn pod_sandbox_status(r: &SandboxRecord) -> cri::PodSandboxStatus {
    let ns = r
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri::PodSandboxState::from(r.state) as i32,
        created_at: r.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: r.ip.clone().unwrap_or_default(),
            additional_ips: vec![],
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace { options: Some(ns) }),
        }),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

fn image_spec(c: &ContainerRecord) -> cri::ImageSpec {
    let mut spec = c.config.image.clone().unwrap_or_default();
    spec.image = c.image.clone();
    spec
}

/// A container as ListContainers returns it.
pub fn container(c: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox_id.clone(),
        metadata: c.config.metadata.clone(),
        image: Some(image_spec(c)),
        image_ref: c.image_ref.clone(),
        state: cri::ContainerState::from(c.state) as i32,
        created_at: c.created_at,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        image_id: c.image_ref.clone(),
    }
}

/// Whether a container passes a ListContainers filter.
pub fn container_matches(c: &ContainerRecord, f: Option<&cri::ContainerFilter>) -> bool {
    let Some(f) = f else { return true };
    if !f.id.is_empty() && !c.id.starts_with(&f.id) {
        return false;
    }
    if !f.pod_sandbox_id.is_empty() && !c.sandbox_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    if let Some(s) = &f.state {
        if cri::ContainerState::from(c.state) as i32 != s.state {
            return false;
        }
    }
    labels_match(&c.config.labels, &f.label_selector)
}

/// A container's status.
pub fn container_status(c: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: cri::ContainerState::from(c.state) as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: vec![],
        log_path: c
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
        image_id: c.image_ref.clone(),
        user: None,
    }
}

/// Container stats from the agent's cgroup figures.
pub fn container_stats(
    c: &ContainerRecord,
    s: Option<&agent_proto::pb::StatsContainerResponse>,
    now: i64,
) -> cri::ContainerStats {
    let v = |value| Some(cri::UInt64Value { value });
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: s.map(|s| cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: v(s.cpu_usage_nanos),
            usage_nano_cores: None,
        }),
        memory: s.map(|s| cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: v(s.memory_usage_bytes),
            available_bytes: (s.memory_limit_bytes > 0).then(|| cri::UInt64Value {
                value: s.memory_limit_bytes.saturating_sub(s.memory_usage_bytes),
            }),
            usage_bytes: v(s.memory_usage_bytes),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        }),
        writable_layer: None,
        swap: None,
    }
}

/// Pod stats: its containers' figures and their sums (the guest's own overhead is not counted).
pub fn pod_sandbox_stats(
    r: &SandboxRecord,
    containers: Vec<cri::ContainerStats>,
    now: i64,
) -> cri::PodSandboxStats {
    let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
        let vals: Vec<u64> = containers.iter().filter_map(f).collect();
        (!vals.is_empty()).then(|| cri::UInt64Value {
            value: vals.iter().sum(),
        })
    };
    let cpu = sum(&|c| {
        c.cpu
            .as_ref()
            .and_then(|u| u.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
    });
    let mem = sum(&|c| {
        c.memory
            .as_ref()
            .and_then(|u| u.working_set_bytes.as_ref())
            .map(|v| v.value)
    });
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: cpu,
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: mem,
                usage_bytes: mem,
                ..Default::default()
            }),
            network: None,
            process: None,
            containers,
        }),
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selector_needs_every_pair() {
        let labels: HashMap<String, String> =
            [("app".into(), "web".into()), ("tier".into(), "fe".into())].into();
        let sel = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_match(&labels, &sel(&[])));
        assert!(labels_match(&labels, &sel(&[("app", "web")])));
        assert!(!labels_match(
            &labels,
            &sel(&[("app", "web"), ("tier", "be")])
        ));
        assert!(!labels_match(&labels, &sel(&[("x", "y")])));
    }
}
