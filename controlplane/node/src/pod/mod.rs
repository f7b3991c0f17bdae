//! The pods bound to this node: a reflector cache fed by a watch (with relists), and one worker
//! per pod uid that reconciles desired against observed state.

pub mod observe;
pub mod probing;
pub mod pull;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;

use crate::cri::labels;
pub use worker::PodEnv;

struct Handle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
    version: Option<String>,
}

/// Feeds `writer` from a watch of the pods bound to `node` (runs until the process ends; the
/// watcher relists on its own after errors or a 410).
pub async fn reflect(client: kube::Client, node: String, writer: Writer<Pod>) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = reflector::reflector(writer, watcher(api, cfg))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        if let Err(e) = ev {
            tracing::warn!("pod watch: {e}");
        }
    }
}

/// How often runtime sandboxes are compared with the API's pods to remove orphans.
const ORPHAN_SCAN: Duration = Duration::from_secs(10);

/// Runs one worker per pod in the cache; a pod that leaves the cache (deleted) has its worker
/// remove its sandbox; a sandbox of no known pod is removed too.
pub async fn manage(env: Arc<PodEnv>) {
    if env.pods.wait_until_ready().await.is_err() {
        tracing::error!("pod cache never became ready");
        return;
    }
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut last_scan = tokio::time::Instant::now() - ORPHAN_SCAN;
    loop {
        let pods = env.pods.state();
        let mut seen = HashSet::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            seen.insert(uid.clone());
            let version = pod.metadata.resource_version.clone();
            match workers.get_mut(&uid) {
                Some(h) if h.version == version => {}
                Some(h) => {
                    h.version = version;
                    let _ = h.tx.send(Some(pod.clone()));
                }
                None => {
                    let (tx, rx) = watch::channel(Some(pod.clone()));
                    let task = tokio::spawn(worker::run(env.clone(), uid.clone(), rx));
                    workers.insert(uid, Handle { tx, task, version });
                }
            }
        }
        for (uid, h) in workers.iter_mut() {
            if !seen.contains(uid) && h.tx.borrow().is_some() {
                let _ = h.tx.send(None);
            }
        }
        workers.retain(|_, h| !h.task.is_finished());
        if last_scan.elapsed() >= ORPHAN_SCAN {
            last_scan = tokio::time::Instant::now();
            env.backoff
                .lock()
                .expect("backoff lock")
                .gc(std::time::Instant::now());
            match env.cri.sandboxes(HashMap::new()).await {
                Ok(list) => {
                    for sb in list {
                        let Some(uid) = sb.labels.get(labels::POD_UID) else {
                            continue;
                        };
                        if !seen.contains(uid) && !workers.contains_key(uid) {
                            tracing::info!(%uid, "sandbox of no pod bound here: removing");
                            let (tx, rx) = watch::channel(None);
                            let task = tokio::spawn(worker::run(env.clone(), uid.clone(), rx));
                            workers.insert(
                                uid.clone(),
                                Handle {
                                    tx,
                                    task,
                                    version: None,
                                },
                            );
                        }
                    }
                }
                Err(e) => tracing::debug!("orphan scan: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
