//! Services and EndpointSlices watched with kube-rs reflectors; the index is rebuilt (at most
//! every 50 ms) after changes and swapped in whole, so a query sees one consistent version.

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

use crate::index::Index;
use crate::Shared;

enum Seen {
    Change,
    Listed(usize),
}

fn events<K>(ev: Result<watcher::Event<K>, watcher::Error>, which: usize) -> Seen {
    match ev {
        Ok(watcher::Event::InitDone) => Seen::Listed(which),
        Ok(_) => Seen::Change,
        Err(e) => {
            tracing::debug!("cluster DNS watch: {e}");
            Seen::Change
        }
    }
}

fn rebuild(shared: &Shared, services: &Store<Service>, slices: &Store<EndpointSlice>) {
    let svcs = services.state();
    let sl = slices.state();
    let idx = Index::build(
        &shared.domain,
        &svcs.iter().map(|s| &**s).collect::<Vec<_>>(),
        &sl.iter().map(|s| &**s).collect::<Vec<_>>(),
    );
    *shared.index.write().expect("index lock") = Some(Arc::new(idx));
}

/// Keeps `shared.index` current until the future is dropped.
pub async fn run(client: kube::Client, shared: Arc<Shared>) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (sl_store, sl_writer) = reflector::store::<EndpointSlice>();
    let svcs = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|e| events(e, 0));
    let sls = reflector::reflector(
        sl_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|e| events(e, 1));
    let mut all = std::pin::pin!(stream::select(svcs, sls));
    let mut listed = [false, false];
    while let Some(first) = all.next().await {
        let mut seen = vec![first];
        // Take what else arrives in the next 50 ms in the same rebuild.
        while let Ok(Some(more)) = tokio::time::timeout(Duration::from_millis(50), all.next()).await
        {
            seen.push(more);
        }
        for s in seen {
            if let Seen::Listed(i) = s {
                listed[i] = true;
            }
        }
        if listed == [true, true] {
            rebuild(&shared, &svc_store, &sl_store);
            if !shared.ready.send_replace(true) {
                tracing::info!(names = svc_store.state().len(), "cluster DNS serving");
            }
        }
    }
}
