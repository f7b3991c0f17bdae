//! The real API server (TLS + token, SQLite in a temp dir) in-process, a kube client for it,
//! and helpers to wait on pods.

#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kennel_apiserver::testing::TestApiServer;
use kennel_apiserver::RunningApiServer;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// One API server for a test.
pub struct Cluster {
    /// The server.
    pub api: RunningApiServer,
    /// Its data dir.
    pub dir: tempfile::TempDir,
    /// An admin client.
    pub client: Client,
}

impl Cluster {
    /// Starts the API server.
    pub async fn start() -> Self {
        let TestApiServer { api, dir, client } = TestApiServer::start().await;
        Self { api, dir, client }
    }

    /// A fresh client (own connection pool).
    pub async fn client_for(api: &RunningApiServer) -> Client {
        kennel_apiserver::testing::admin_client(api).await
    }

    /// Pods API in `default`.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod with `spec` extras merged into one busybox container spec.
    pub async fn create_pod(&self, name: &str, labels: Value, spec: Value) -> Pod {
        let mut s = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let (Some(m), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            m.extend(extra.clone());
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels}, "spec": s,
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Polls `f` on pod `name` until it returns Some, or panics after `secs`.
    pub async fn wait_pod<T>(&self, name: &str, secs: u64, f: impl Fn(&Pod) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(p) = self.pods().get(name).await {
                if let Some(v) = f(&p) {
                    return v;
                }
                last = Some(p);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "pod {name} did not reach the state in {secs}s: {:?}",
            last.map(|p| p.status)
        );
    }

    /// Events about pod `name` with `reason`.
    pub async fn events(&self, name: &str, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }
}

/// The pod's node, once bound.
pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

/// Whether the pod is Running and Ready with a pod IP.
pub fn running(p: &Pod) -> Option<()> {
    let st = p.status.as_ref()?;
    (st.phase.as_deref() == Some("Running") && st.pod_ip.is_some()).then_some(())
}

/// The PodScheduled=False/Unschedulable message.
pub fn unschedulable_message(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?
        .message
        .clone()
}

/// Aborts a task on drop.
pub struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns a future that is aborted when the returned guard drops.
pub fn spawn<F, T, E>(f: F) -> Task
where
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
    E: std::fmt::Display,
{
    Task(tokio::spawn(async move {
        if let Err(e) = f.await {
            panic!("task failed: {e}");
        }
    }))
}
