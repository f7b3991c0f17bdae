//! Reads a pod's state from the runtime: its latest sandbox and every container the runtime still
//! holds, by the kubelet labels on them. Nothing is remembered between calls, so a restarted node
//! agent sees exactly what is running.

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::status::{Observed, ObservedContainer, ObservedSandbox, RuntimeState};
use crate::cri::{labels, CriClient, CriClientError};

/// Sandboxes of a pod uid, newest first.
pub async fn sandboxes(cri: &CriClient, uid: &str) -> Result<Vec<cri::PodSandbox>, CriClientError> {
    let mut v = cri
        .sandboxes(HashMap::from([(
            labels::POD_UID.to_string(),
            uid.to_string(),
        )]))
        .await?;
    v.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(v)
}

fn runtime_state(s: i32) -> RuntimeState {
    match cri::ContainerState::try_from(s) {
        Ok(cri::ContainerState::ContainerCreated) => RuntimeState::Created,
        Ok(cri::ContainerState::ContainerRunning) => RuntimeState::Running,
        Ok(cri::ContainerState::ContainerExited) => RuntimeState::Exited,
        _ => RuntimeState::Unknown,
    }
}

/// A pod's runtime state; `Observed`'s agent-held fields are left empty.
pub async fn observe(cri: &CriClient, uid: &str) -> Result<Observed, CriClientError> {
    let mut obs = Observed::default();
    let boxes = sandboxes(cri, uid).await?;
    if let Some(sb) = boxes.first() {
        let ready = sb.state == cri::PodSandboxState::SandboxReady as i32;
        let mut ips = Vec::new();
        if ready {
            if let Ok(st) = cri.sandbox_status(&sb.id).await {
                if let Some(n) = st.network {
                    if !n.ip.is_empty() {
                        ips.push(n.ip);
                    }
                    ips.extend(n.additional_ips.into_iter().map(|p| p.ip));
                }
            }
        }
        obs.sandbox = Some(ObservedSandbox {
            id: sb.id.clone(),
            ready,
            ips,
        });
        let list = cri
            .containers(HashMap::from([(
                labels::POD_UID.to_string(),
                uid.to_string(),
            )]))
            .await?;
        for c in list.into_iter().filter(|c| c.pod_sandbox_id == sb.id) {
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default();
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            let st = match cri.container_status(&c.id).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            obs.containers.push(ObservedContainer {
                id: c.id,
                name,
                attempt,
                state: runtime_state(st.state),
                started_at: st.started_at,
                finished_at: st.finished_at,
                exit_code: st.exit_code,
                reason: st.reason,
                message: st.message,
                image_ref: st.image_ref,
            });
        }
    }
    Ok(obs)
}
