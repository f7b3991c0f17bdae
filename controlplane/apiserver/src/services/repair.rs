//! Keeps the reservation keys true to the stored Services: a watch on Services releases what a
//! deleted or changed Service no longer holds (whichever path removed it: DELETE, a namespace
//! going away, a last finalizer), and a full pass at start and every few minutes reserves what
//! Services hold without a key (data from before the allocator) and drops keys no Service holds
//! (a crash between reserving and writing), as upstream's repair controllers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::plan::{held_ip, held_ports};
use super::reserve::{self, Owner};
use super::ServiceNetwork;
use crate::registry;
use kennel_store::{EventKind, Store, StoreError, WatchEvent};

/// How often the full pass runs.
pub const PERIOD: Duration = Duration::from_secs(180);

fn services_prefix() -> String {
    registry::find("", "v1", "services")
        .expect("services registered")
        .key_prefix()
}

/// Reservation keys of the values `svc` holds.
fn keys_of(net: &ServiceNetwork, svc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = held_ip(svc)
        .filter(|ip| net.usable_ip(*ip))
        .map(reserve::ip_key)
        .into_iter()
        .collect();
    keys.extend(held_ports(svc).into_iter().map(reserve::port_key));
    keys
}

/// One full pass.
pub async fn repair_once(store: &dyn Store, net: &ServiceNetwork) -> Result<(), StoreError> {
    let prefix = services_prefix();
    let mut live: HashMap<String, HashSet<String>> = HashMap::new();
    let mut token = None;
    loop {
        let page = store.list(&prefix, 0, token.as_deref()).await?;
        for kv in &page.items {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let owner = Owner::of(&svc);
            let keys = keys_of(net, &svc);
            for key in &keys {
                let mut held = reserve::Held::default();
                match held.reserve(store, key, &owner).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(%key, service = %format!("{}/{}", owner.namespace, owner.name),
                        "a service holds a value another service has reserved")
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "reserving a held value"),
                }
            }
            live.insert(owner.uid, keys.into_iter().collect());
        }
        match page.continue_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    for prefix in [reserve::IP_PREFIX, reserve::PORT_PREFIX] {
        let page = store.list(prefix, 0, None).await?;
        for kv in page.items {
            let owner = serde_json::from_slice::<Owner>(&kv.value).ok();
            let holds = owner
                .as_ref()
                .and_then(|o| live.get(&o.uid))
                .is_some_and(|keys| keys.contains(&kv.key));
            let recent = owner.as_ref().is_some_and(|o| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                now.saturating_sub(o.reserved_at) < reserve::GRACE.as_secs()
            });
            if !holds && !recent {
                tracing::info!(key = %kv.key, "releasing a reservation no service holds");
                match store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Releases what one Service change let go of.
async fn on_event(store: &dyn Store, net: &ServiceNetwork, ev: &WatchEvent) {
    let decode = |v: &[u8]| serde_json::from_slice::<Value>(v).ok();
    let (before, after) = match ev.kind {
        EventKind::Delete => (decode(&ev.kv.value), None),
        EventKind::Put => (
            ev.prev.as_ref().and_then(|p| decode(&p.value)),
            decode(&ev.kv.value),
        ),
    };
    let Some(before) = before else { return };
    let kept: HashSet<String> = after
        .as_ref()
        .map(|a| keys_of(net, a).into_iter().collect())
        .unwrap_or_default();
    let gone: Vec<String> = keys_of(net, &before)
        .into_iter()
        .filter(|k| !kept.contains(k))
        .collect();
    if gone.is_empty() {
        return;
    }
    let owner = Owner::of(&before);
    // The object may have taken a value back since this event: ask the stored one.
    let now_held: HashSet<String> = match reserve::owner_service(store, &owner).await {
        Ok(Some(cur)) => keys_of(net, &cur).into_iter().collect(),
        Ok(None) => HashSet::new(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a service to release its values");
            return;
        }
    };
    for key in gone.iter().filter(|k| !now_held.contains(*k)) {
        if let Err(e) = reserve::release_if_held(store, key, &owner.uid).await {
            tracing::warn!(%key, error = %e, "releasing a service reservation");
        }
    }
}

/// Runs the watch and the periodic pass until aborted. Call [`repair_once`] before serving.
pub async fn run(store: Arc<dyn Store>, net: Arc<ServiceNetwork>) {
    let prefix = services_prefix();
    loop {
        let rev = match store.current_revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "service allocator repair: reading the revision");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut events = match store.watch(&prefix, rev).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "service allocator repair: watch");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut tick = tokio::time::interval(PERIOD);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => on_event(store.as_ref(), &net, &ev).await,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "service allocator repair: rewatching");
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if let Err(e) = repair_once(store.as_ref(), &net).await {
                        tracing::warn!(error = %e, "service allocator repair pass");
                    }
                }
            }
        }
        // Whatever happened while not watching is caught up by a full pass.
        if let Err(e) = repair_once(store.as_ref(), &net).await {
            tracing::warn!(error = %e, "service allocator repair pass");
        }
    }
}
