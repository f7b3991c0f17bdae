//! The sync loop: watch Services and EndpointSlices, rebuild the model on
//! change (at most once per `min_sync_period`), apply the difference to the
//! kernel as one `nft -f` transaction, and publish a [`SyncStatus`].
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::apply::{ApplyError, Nft};
use crate::model::{self, NodeInfo, SERVICE_NAME_LABEL};
use crate::rules::{self, Ruleset};
use crate::{lbstatus, ProxyConfig};

/// The sync loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A watch ended before its cache was filled.
    #[error("{0} watch ended")]
    WatchEnded(&'static str),
    /// Removing the table on request failed.
    #[error("clean up the table")]
    Cleanup(#[source] ApplyError),
}

/// What the last sync did (published after every attempt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Number of successful syncs so far (0: none yet).
    pub generation: u64,
    /// The last successful sync replaced the whole table.
    pub full: bool,
    /// Service ports proxied.
    pub service_ports: usize,
    /// Bytes of the last applied script (0 if nothing changed).
    pub script_bytes: usize,
    /// Render + apply time of the last successful sync.
    pub duration: Duration,
    /// Error of the last attempt, if it failed (a full resync follows).
    pub error: Option<String>,
}

fn watch_into<K>(
    set: &mut JoinSet<()>,
    api: Api<K>,
    cfg: watcher::Config,
    notify: Arc<Notify>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, cfg).default_backoff().reflect(writer);
    set.spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!(error = %e, "proxy watch error (retrying)"),
            }
        }
    });
    reader
}

/// Runs the proxy until the future is dropped, publishing every sync on `status`.
pub async fn run_with_status(
    cfg: ProxyConfig,
    client: Client,
    status: watch::Sender<SyncStatus>,
) -> Result<(), SyncError> {
    let notify = Arc::new(Notify::new());
    let mut tasks = JoinSet::new(); // dropping it stops the watches
    let services = watch_into(
        &mut tasks,
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let slices = watch_into(
        &mut tasks,
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        notify.clone(),
    );
    services
        .wait_until_ready()
        .await
        .map_err(|_| SyncError::WatchEnded("Service"))?;
    slices
        .wait_until_ready()
        .await
        .map_err(|_| SyncError::WatchEnded("EndpointSlice"))?;

    let node = NodeInfo {
        node_name: cfg.node_name.clone(),
        node_ips: cfg.node_ips.clone(),
        cluster_cidr: cfg.cluster_cidr,
    };
    let nft = Nft::for_netns(cfg.netns.as_deref());
    let mut applied: Option<Ruleset> = None; // None: next sync is full
    let mut last_full = Instant::now();
    let mut current = SyncStatus::default();
    loop {
        let started = Instant::now();
        if last_full.elapsed() >= cfg.full_sync_period {
            applied = None;
        }
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let eps = slices.state();
        let eps: Vec<&EndpointSlice> = eps.iter().map(|s| s.as_ref()).collect();
        let (model, errors) = model::build(&svcs, eps, &node);
        for e in &errors {
            tracing::warn!(error = %e, "service skipped");
        }
        let want = rules::desired(&model, &node);
        let full = applied.is_none();
        let script = match &applied {
            None => rules::render_full(&cfg.table, &want),
            Some(old) => rules::render_partial(&cfg.table, old, &want),
        };
        let bytes = script.len();
        let nft2 = nft.clone();
        let result = tokio::task::spawn_blocking(move || nft2.apply(&script))
            .await
            .unwrap_or_else(|e| Err(ApplyError::Spawn(std::io::Error::other(e))));
        match result {
            Ok(()) => {
                if full {
                    last_full = Instant::now();
                }
                applied = Some(want);
                current = SyncStatus {
                    generation: current.generation + 1,
                    full,
                    service_ports: model.len(),
                    script_bytes: bytes,
                    duration: started.elapsed(),
                    error: None,
                };
                tracing::debug!(?current, "proxy synced");
            }
            Err(e) => {
                tracing::warn!(error = %e, full, "proxy sync failed; full resync next");
                applied = None;
                current.error = Some(e.to_string());
            }
        }
        if let Err(e) = lbstatus::reconcile(&client, &svcs, &cfg.node_ips).await {
            tracing::warn!(error = %e, "load-balancer status");
        }
        status.send_replace(current.clone());

        // Rate limit, then wait for a change (or the periodic full resync).
        let next = started + cfg.min_sync_period;
        tokio::time::sleep_until(next.into()).await;
        if current.error.is_none() {
            let until_full = cfg.full_sync_period.saturating_sub(last_full.elapsed());
            let _ = tokio::time::timeout(until_full, notify.notified()).await;
        }
    }
}
