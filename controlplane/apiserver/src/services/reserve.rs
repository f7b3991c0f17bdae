//! Reservation keys: `/ranges/serviceips/<ip>` and `/ranges/servicenodeports/<port>`, each
//! naming the Service (namespace, name, uid) that holds the value. Created with
//! create-if-absent; a key whose Service is gone is taken over with compare-and-swap.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ServiceNetwork;
use crate::registry;
use crate::status::ApiError;
use kennel_store::{Store, StoreError};

/// Prefix of ClusterIP reservations.
pub const IP_PREFIX: &str = "/ranges/serviceips/";
/// Prefix of NodePort reservations.
pub const PORT_PREFIX: &str = "/ranges/servicenodeports/";
/// A reservation younger than this whose Service does not exist may belong to a create still
/// in flight: it is not taken over or repaired away.
pub const GRACE: Duration = Duration::from_secs(30);
/// How long an explicit request waits for a just-deleted Service's values to be released.
const RELEASE_WAIT: Duration = Duration::from_millis(200);
const RELEASE_TRIES: u32 = 10;

/// The key reserving `ip`.
pub fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

/// The key reserving node port `n`.
pub fn port_key(n: u16) -> String {
    format!("{PORT_PREFIX}{n}")
}

/// Who holds a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service uid.
    pub uid: String,
    /// Unix seconds of the reservation.
    #[serde(default)]
    pub reserved_at: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Owner {
    /// The owner record for Service `svc`.
    pub fn of(svc: &Value) -> Self {
        let m = &svc["metadata"];
        let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
        Owner {
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
            reserved_at: now(),
        }
    }

    fn young(&self) -> bool {
        now().saturating_sub(self.reserved_at) < GRACE.as_secs()
    }
}

fn internal(e: StoreError) -> ApiError {
    ApiError::Internal(format!("service allocator: {e}"))
}

/// The stored Service `owner` names, if it is still that object.
pub async fn owner_service(store: &dyn Store, owner: &Owner) -> Result<Option<Value>, StoreError> {
    let def = registry::find("", "v1", "services").expect("services registered");
    let Some(kv) = store
        .get(&def.key(Some(&owner.namespace), &owner.name))
        .await?
    else {
        return Ok(None);
    };
    let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
        return Ok(None);
    };
    Ok((svc["metadata"]["uid"].as_str() == Some(owner.uid.as_str())).then_some(svc))
}

/// The suffixes (addresses or port numbers) reserved under `prefix`.
pub async fn reserved(store: &dyn Store, prefix: &str) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    let mut token = None;
    loop {
        let page = store.list(prefix, 0, token.as_deref()).await?;
        out.extend(
            page.items
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(prefix).map(str::to_string)),
        );
        match page.continue_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

enum Try {
    Got,
    Taken,
    /// Held by a Service that no longer exists, reserved recently: may be released soon.
    Stale,
}

async fn try_reserve(store: &dyn Store, key: &str, owner: &Owner) -> Result<Try, StoreError> {
    let value = serde_json::to_vec(owner).expect("owner serializes");
    match store.create(key, value.clone()).await {
        Ok(_) => return Ok(Try::Got),
        Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    let Some(kv) = store.get(key).await? else {
        return Ok(Try::Stale);
    };
    let Ok(cur) = serde_json::from_slice::<Owner>(&kv.value) else {
        // Unreadable: take it over.
        return cas(store, key, value, kv.mod_revision).await;
    };
    if cur.uid == owner.uid {
        return Ok(Try::Got);
    }
    if owner_service(store, &cur).await?.is_some() {
        return Ok(Try::Taken);
    }
    if cur.young() {
        return Ok(Try::Stale);
    }
    cas(store, key, value, kv.mod_revision).await
}

async fn cas(store: &dyn Store, key: &str, value: Vec<u8>, rev: i64) -> Result<Try, StoreError> {
    match store.update(key, value, Some(rev)).await {
        Ok(_) => Ok(Try::Got),
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(Try::Stale),
        Err(e) => Err(e),
    }
}

/// Releases `key` if `uid` holds it.
pub async fn release_if_held(store: &dyn Store, key: &str, uid: &str) -> Result<(), StoreError> {
    let Some(kv) = store.get(key).await? else {
        return Ok(());
    };
    let held = serde_json::from_slice::<Owner>(&kv.value).map_or(true, |o| o.uid == uid);
    if held {
        match store.delete(key, Some(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The reservations one write made, released again when the write fails.
#[derive(Debug, Default)]
pub struct Held {
    keys: Vec<String>,
    uid: String,
}

impl Held {
    /// Reserves `key` for `owner`; false when another live Service holds it. A value held by
    /// a Service deleted a moment ago is waited for (its release follows its deletion).
    pub async fn reserve(
        &mut self,
        store: &dyn Store,
        key: &str,
        owner: &Owner,
    ) -> Result<bool, ApiError> {
        for _ in 0..RELEASE_TRIES {
            match try_reserve(store, key, owner).await.map_err(internal)? {
                Try::Got => {
                    self.keys.push(key.to_string());
                    self.uid.clone_from(&owner.uid);
                    return Ok(true);
                }
                Try::Taken => return Ok(false),
                Try::Stale => tokio::time::sleep(RELEASE_WAIT).await,
            }
        }
        Ok(false)
    }

    async fn pick<I: Iterator<Item = String>>(
        &mut self,
        store: &dyn Store,
        prefix: &str,
        candidates: I,
        owner: &Owner,
    ) -> Result<Option<String>, ApiError> {
        let used = reserved(store, prefix).await.map_err(internal)?;
        for c in candidates.filter(|c| !used.contains(c)) {
            let key = format!("{prefix}{c}");
            if let Try::Got = try_reserve(store, &key, owner).await.map_err(internal)? {
                self.keys.push(key);
                self.uid.clone_from(&owner.uid);
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Picks and reserves a free ClusterIP.
    pub async fn pick_ip(
        &mut self,
        store: &dyn Store,
        net: &ServiceNetwork,
        owner: &Owner,
    ) -> Result<Ipv4Addr, ApiError> {
        let c = net.candidates().map(|ip| ip.to_string());
        match self.pick(store, IP_PREFIX, c, owner).await? {
            Some(ip) => Ok(ip.parse().expect("candidate address")),
            None => Err(ApiError::Internal(format!(
                "failed to allocate a serviceIP: range {} is full",
                net.cidr
            ))),
        }
    }

    /// Picks and reserves a free node port.
    pub async fn pick_port(
        &mut self,
        store: &dyn Store,
        net: &ServiceNetwork,
        owner: &Owner,
    ) -> Result<u16, ApiError> {
        let c = net.node_ports.clone().map(|n| n.to_string());
        match self.pick(store, PORT_PREFIX, c, owner).await? {
            Some(n) => Ok(n.parse().expect("candidate port")),
            None => Err(ApiError::Internal(format!(
                "failed to allocate a nodePort: range {}-{} is full",
                net.node_ports.start(),
                net.node_ports.end()
            ))),
        }
    }

    /// Releases every reservation this write made (its write failed or was a dry run).
    pub async fn release(self, store: &dyn Store) {
        for key in &self.keys {
            if let Err(e) = release_if_held(store, key, &self.uid).await {
                tracing::warn!(%key, error = %e, "releasing a service reservation");
            }
        }
    }
}
