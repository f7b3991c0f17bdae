//! Ingresses, Services, EndpointSlices, TLS Secrets (and IngressClasses when the API server
//! serves them) watched with kube-rs reflectors. After changes (debounced: everything that
//! arrives within the window is one rebuild) the routing table and the certificate table are
//! rebuilt whole and swapped in atomically; requests and handshakes in flight keep the version
//! they started with, and no connection is touched. Then the served Ingresses' status is
//! brought to the node IPs.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::backends::{ServiceIndex, SERVICE_NAME_LABEL};
use crate::class::ClassPolicy;
use crate::forward::Proxy;
use crate::table::RouteTable;
use crate::tls::{self, CertCache, SniResolver, TLS_SECRET_TYPE};
use crate::{status, IngressConfig, SyncStatus};

/// Retry period of failed status writes when nothing else changes.
const STATUS_RETRY: Duration = Duration::from_secs(5);

enum Seen {
    Change,
    Listed(usize),
}

fn watch_stream<K>(
    client: &Client,
    cfg: watcher::Config,
    which: usize,
) -> (Store<K>, BoxStream<'static, Seen>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    let (store, writer) = reflector::store::<K>();
    let s = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), cfg).default_backoff(),
    )
    .map(move |ev| match ev {
        Ok(watcher::Event::InitDone) => Seen::Listed(which),
        Ok(_) => Seen::Change,
        Err(e) => {
            tracing::debug!(
                kind = K::kind(&()).as_ref(),
                "ingress watch error (retrying): {e}"
            );
            Seen::Change
        }
    })
    .boxed();
    (store, s)
}

/// Whether the API server serves `networking.k8s.io/v1` ingressclasses; retried until it
/// answers one way or the other.
async fn serves_ingress_classes(client: &Client) -> bool {
    loop {
        match client
            .list_api_group_resources("networking.k8s.io/v1")
            .await
        {
            Ok(list) => return list.resources.iter().any(|r| r.name == "ingressclasses"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => return false,
            Err(e) => {
                tracing::debug!("ingress: API discovery failed (retrying): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct Stores {
    ingresses: Store<Ingress>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
    classes: Option<Store<IngressClass>>,
}

fn refs<K>(v: &[Arc<K>]) -> Vec<&K> {
    v.iter().map(|a| a.as_ref()).collect()
}

/// Keeps the tables current until the future is dropped.
pub(crate) async fn run(
    cfg: IngressConfig,
    client: Client,
    proxy: Arc<Proxy>,
    resolver: Arc<SniResolver>,
    published: watch::Sender<SyncStatus>,
) {
    let classes_served = serves_ingress_classes(&client).await;
    if !classes_served {
        tracing::info!(
            class = %cfg.class_name,
            "the API server does not serve IngressClasses; class {} is taken as the default",
            cfg.class_name
        );
    }
    let (ingresses, s0) = watch_stream::<Ingress>(&client, watcher::Config::default(), 0);
    let (services, s1) = watch_stream::<Service>(&client, watcher::Config::default(), 1);
    let (slices, s2) = watch_stream::<EndpointSlice>(
        &client,
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        2,
    );
    let (secrets, s3) = watch_stream::<Secret>(
        &client,
        watcher::Config::default().fields(&format!("type={TLS_SECRET_TYPE}")),
        3,
    );
    let mut all = vec![s0, s1, s2, s3];
    let mut listed = vec![false; 4];
    let classes = classes_served.then(|| {
        let (store, s4) = watch_stream::<IngressClass>(&client, watcher::Config::default(), 4);
        all.push(s4);
        listed.push(false);
        store
    });
    let stores = Stores {
        ingresses,
        services,
        slices,
        secrets,
        classes,
    };
    let mut all = stream::select_all(all);
    let mut cache = CertCache::default();
    let mut last_warnings = BTreeSet::new();
    let mut current = SyncStatus::default();
    loop {
        let first = if current.status_errors > 0 {
            match tokio::time::timeout(STATUS_RETRY, all.next()).await {
                Ok(None) => return,
                Ok(Some(s)) => Some(s),
                Err(_) => None,
            }
        } else {
            match all.next().await {
                None => return,
                Some(s) => Some(s),
            }
        };
        let mut seen: Vec<Seen> = first.into_iter().collect();
        let deadline = tokio::time::Instant::now() + cfg.debounce;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, all.next()).await {
            seen.push(more);
        }
        for s in seen {
            if let Seen::Listed(i) = s {
                listed[i] = true;
            }
        }
        if !listed.iter().all(|l| *l) {
            continue;
        }
        current = rebuild(
            &cfg, &client, &stores, &proxy, &resolver, &mut cache, current,
        )
        .await;
        let now: BTreeSet<String> = current.warnings.iter().cloned().collect();
        for w in now.difference(&last_warnings) {
            tracing::warn!("{w}");
        }
        last_warnings = now;
        published.send_replace(current.clone());
    }
}

async fn rebuild(
    cfg: &IngressConfig,
    client: &Client,
    stores: &Stores,
    proxy: &Proxy,
    resolver: &SniResolver,
    cache: &mut CertCache,
    last: SyncStatus,
) -> SyncStatus {
    let classes = stores.classes.as_ref().map(|s| s.state());
    let class_refs = classes.as_deref().map(|c| refs(c));
    let policy = ClassPolicy::new(&cfg.class_name, &cfg.controller, class_refs.as_deref());
    let ingresses = stores.ingresses.state();
    let served: Vec<&Ingress> = refs(&ingresses)
        .into_iter()
        .filter(|i| policy.serves(i))
        .collect();
    let (services, slices, secrets) = (
        stores.services.state(),
        stores.slices.state(),
        stores.secrets.state(),
    );
    let (svc_refs, slice_refs) = (refs(&services), refs(&slices));
    let index = ServiceIndex::new(&svc_refs, &slice_refs);
    let (table, mut warnings) = RouteTable::build(&served, &index);
    let (rules, backends) = (table.rules(), table.backends());
    proxy.table.store(Arc::new(table));
    let (certs, cert_warnings) = tls::build(&served, &refs(&secrets), cache);
    let certificates = certs.len();
    resolver.store(certs);
    warnings.extend(cert_warnings);

    let (_, errors) = status::reconcile(client, &served, &cfg.node_ips).await;
    for e in &errors {
        tracing::warn!("{}", crate::error_chain(e));
    }
    SyncStatus {
        generation: last.generation + 1,
        ingresses: served.len(),
        rules,
        backends,
        certificates,
        warnings,
        status_errors: errors.len(),
    }
}
