//! Admission of created objects, in upstream's order: LimitRanger (mutating: container
//! defaults; then validating: min/max/ratio of Containers, Pods and claims) and ResourceQuota
//! (validating and charging: every quota of the namespace that covers the object must have room;
//! its `status.used` is raised with a compare-and-swap, so concurrent creates cannot both take
//! the last unit). Refusals are 403 Forbidden with upstream's messages. `status.used` is
//! recomputed from the objects themselves when a quota is written, when an object leaves the
//! namespace and when a pod finishes (the work upstream's quota controller does).

pub mod limits;
pub mod quantity;
pub mod quota;
pub mod serviceaccount;
pub mod storage;

use serde_json::Value;

use crate::handlers::{decode_as, encode_as, ApiState};
use crate::registry::{self, ResourceDef};
use crate::status::ApiError;

/// How often a quota charge is retried when another write changed the quota meanwhile.
const CHARGE_RETRIES: usize = 16;

fn forbidden(def: &ResourceDef, obj: &Value, why: String) -> ApiError {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    ApiError::Forbidden(format!(
        "{} \"{name}\" is forbidden: {why}",
        def.qualified()
    ))
}

async fn list_in(
    state: &ApiState,
    def: &ResourceDef,
    ns: &str,
) -> Result<Vec<(kennel_store::KeyValue, Value)>, ApiError> {
    let page = state
        .store
        .list(&def.list_prefix(Some(ns)), 0, None)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    page.items
        .into_iter()
        .map(|kv| decode_as(def, &kv).map(|v| (kv, v)))
        .collect()
}

fn core(plural: &str) -> &'static ResourceDef {
    registry::find("", "v1", plural).expect("built-in resource registered")
}

/// Mutating admission of a new object: for a Pod, ServiceAccount (default account, token
/// volume) then LimitRanger's container defaults.
pub async fn mutate(
    state: &ApiState,
    def: &ResourceDef,
    ns: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    admit_storage(state, def, obj).await?;
    let (Some(ns), "Pod") = (ns, def.strategy_kind()) else {
        return Ok(());
    };
    if !state
        .disabled_admission
        .iter()
        .any(|p| p == serviceaccount::PLUGIN_NAME)
    {
        serviceaccount::admit(state, def, ns, obj).await?;
    }
    let ranges: Vec<Value> = list_in(state, core("limitranges"), ns)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    limits::default_pod(&ranges, obj);
    Ok(())
}

/// Admission plugins that `disable_admission_plugins` may name.
pub const PLUGINS: &[&str] = &[
    serviceaccount::PLUGIN_NAME,
    storage::DEFAULT_STORAGE_CLASS,
    storage::IN_USE_PROTECTION,
];

fn enabled(state: &ApiState, plugin: &str) -> bool {
    !state.disabled_admission.iter().any(|p| p == plugin)
}

/// DefaultStorageClass and StorageObjectInUseProtection for a new claim or volume.
async fn admit_storage(
    state: &ApiState,
    def: &ResourceDef,
    obj: &mut Value,
) -> Result<(), ApiError> {
    match def.strategy_kind() {
        "PersistentVolumeClaim" => {
            if enabled(state, storage::DEFAULT_STORAGE_CLASS) {
                let classes_def = registry::find("storage.k8s.io", "v1", "storageclasses")
                    .expect("storageclasses registered");
                let page = state
                    .store
                    .list(&classes_def.list_prefix(None), 0, None)
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let classes = page
                    .items
                    .iter()
                    .map(|kv| decode_as(classes_def, kv))
                    .collect::<Result<Vec<_>, _>>()?;
                storage::default_claim_class(&classes, obj);
            }
            if enabled(state, storage::IN_USE_PROTECTION) {
                storage::protect(obj, "kubernetes.io/pvc-protection");
            }
        }
        "PersistentVolume" if enabled(state, storage::IN_USE_PROTECTION) => {
            storage::protect(obj, "kubernetes.io/pv-protection");
        }
        _ => {}
    }
    Ok(())
}

/// Validating admission of a new object: LimitRanger's limits, then the quotas' charge (not
/// written for a dry run).
pub async fn validate(
    state: &ApiState,
    def: &ResourceDef,
    ns: Option<&str>,
    obj: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let Some(ns) = ns else { return Ok(()) };
    let kind = def.strategy_kind();
    if matches!(kind, "Pod" | "PersistentVolumeClaim") {
        let ranges: Vec<Value> = list_in(state, core("limitranges"), ns)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let errs = limits::violations(&ranges, kind, obj);
        match errs.len() {
            0 => {}
            1 => return Err(forbidden(def, obj, errs[0].clone())),
            _ => return Err(forbidden(def, obj, format!("[{}]", errs.join(", ")))),
        }
    }
    charge(state, def, ns, obj, dry_run).await
}

async fn charge(
    state: &ApiState,
    def: &ResourceDef,
    ns: &str,
    obj: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let quotas_def = core("resourcequotas");
    let kind = def.strategy_kind();
    let delta = quota::usage_of(kind, def.plural, def.group, obj);
    for _ in 0..CHARGE_RETRIES {
        let quotas = list_in(state, quotas_def, ns).await?;
        let mut writes = Vec::new();
        for (kv, q) in &quotas {
            if !quota::in_scope(q, kind, obj) {
                continue;
            }
            let name = q["metadata"]["name"].as_str().unwrap_or("");
            if kind == "Pod" {
                if let Some(why) = quota::missing_specs(q, obj) {
                    return Err(forbidden(def, obj, format!("failed quota: {name}: {why}")));
                }
            }
            let hard = quota::hard(q);
            if !delta.keys().any(|k| hard.contains_key(k)) {
                continue;
            }
            let next = quota::charge(name, &hard, &quota::used(q), &delta)
                .map_err(|why| forbidden(def, obj, why))?;
            let mut updated = q.clone();
            updated["status"] = quota::status(q, &next);
            writes.push((kv, updated));
        }
        if dry_run {
            return Ok(());
        }
        let mut conflicted = false;
        for (kv, updated) in writes {
            match state
                .store
                .update(
                    &kv.key,
                    encode_as(quotas_def, &updated),
                    Some(kv.mod_revision),
                )
                .await
            {
                Ok(_) => {}
                Err(kennel_store::StoreError::Conflict { .. }) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(ApiError::Internal(e.to_string())),
            }
        }
        if !conflicted {
            return Ok(());
        }
        // Another admission moved a quota: read it again and retry (not a recount from the
        // objects, which would miss the ones charged but not yet stored).
    }
    Err(ApiError::Conflict {
        resource: quotas_def.qualified(),
        name: ns.to_string(),
        message: "the quota kept changing while this object was admitted; try again".into(),
    })
}

/// The resource whose objects a quota key counts.
fn counted_by(key: &str) -> Option<(String, String)> {
    let core_of = |p: &str| Some((String::new(), p.to_string()));
    match key {
        "pods"
        | "cpu"
        | "memory"
        | "requests.cpu"
        | "requests.memory"
        | "limits.cpu"
        | "limits.memory"
        | "requests.ephemeral-storage"
        | "limits.ephemeral-storage" => core_of("pods"),
        "services" | "services.nodeports" | "services.loadbalancers" => core_of("services"),
        "requests.storage" => core_of("persistentvolumeclaims"),
        "configmaps"
        | "secrets"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "resourcequotas" => core_of(key),
        other => {
            let rest = other.strip_prefix("count/")?;
            match rest.split_once('.') {
                Some((plural, group)) => Some((group.to_string(), plural.to_string())),
                None => core_of(rest),
            }
        }
    }
}

/// Recomputes `status.used` of every quota in `ns` from the objects there.
pub async fn recalculate(state: &ApiState, ns: &str) -> Result<(), ApiError> {
    let quotas_def = core("resourcequotas");
    let quotas = list_in(state, quotas_def, ns).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (_, q) in &quotas {
        for key in quota::hard(q).keys() {
            if let Some(r) = counted_by(key) {
                if !wanted.contains(&r) {
                    wanted.push(r);
                }
            }
        }
    }
    let mut objects: Vec<(&'static ResourceDef, Value)> = Vec::new();
    for (group, plural) in &wanted {
        let Some(def) = registry::all()
            .into_iter()
            .find(|d| d.group == group && d.plural == plural && !crate::convert::shares_storage(d))
        else {
            continue;
        };
        for (_, o) in list_in(state, def, ns).await? {
            objects.push((def, o));
        }
    }
    for (kv, q) in quotas {
        let mut used = quota::Usage::new();
        for (def, o) in &objects {
            let kind = def.strategy_kind();
            if !quota::in_scope(&q, kind, o)
                || (kind == "Pod" && !o["metadata"]["deletionTimestamp"].is_null())
            {
                continue;
            }
            for (k, v) in quota::usage_of(kind, def.plural, def.group, o) {
                let cur = used.get(&k).copied().unwrap_or_default();
                used.insert(k, cur + v);
            }
        }
        let status = quota::status(&q, &used);
        if q["status"] == status {
            continue;
        }
        let mut updated = q.clone();
        updated["status"] = status;
        match state
            .store
            .update(
                &kv.key,
                encode_as(quotas_def, &updated),
                Some(kv.mod_revision),
            )
            .await
        {
            // A concurrent charge wins; the next recount corrects it if needed.
            Ok(_)
            | Err(kennel_store::StoreError::Conflict { .. })
            | Err(kennel_store::StoreError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_keys_name_what_they_count() {
        let c = |k: &str| counted_by(k).map(|(g, p)| format!("{g}/{p}"));
        assert_eq!(c("limits.memory").as_deref(), Some("/pods"));
        assert_eq!(c("services.nodeports").as_deref(), Some("/services"));
        assert_eq!(
            c("count/deployments.apps").as_deref(),
            Some("apps/deployments")
        );
        assert_eq!(c("count/configmaps").as_deref(), Some("/configmaps"));
        assert_eq!(
            c("requests.storage").as_deref(),
            Some("/persistentvolumeclaims")
        );
        assert_eq!(c("nvidia.com/gpu"), None);
    }
}
