//! DELETE of one object (preconditions, finalizers, graceful pod deletion, the garbage
//! collector's `orphan`/`foregroundDeletion` finalizers, namespaces) and deletecollection. The
//! API server only records the intent: dependents are the garbage collector's work and a
//! namespace's content the namespace controller's (both in the controller manager).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::cascade::{deletion_finalizers, propagation, Propagation};
use super::read::{collect, Filter};
use super::{encode_as, json_response, ns_of, read_current, with_rv, ApiState};
use crate::defaults::now_rfc3339;
use crate::registry::ResourceDef;
use crate::request::{self, Query, Target};
use crate::status::{success, ApiError};

/// Options from the DeleteOptions body and query.
pub(super) struct DeleteOpts {
    pub(super) dry_run: bool,
    grace: Option<i64>,
    rv: Option<String>,
    uid: Option<String>,
    propagation: Propagation,
}

fn delete_opts(query: &Query, headers: &HeaderMap, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        request::parse_body(headers, body)?
    };
    let dry_run = request::dry_run(query)?
        || b["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let grace = query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| b["gracePeriodSeconds"].as_i64());
    Ok(DeleteOpts {
        dry_run,
        grace,
        rv: b["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from),
        uid: b["preconditions"]["uid"].as_str().map(String::from),
        propagation: propagation(
            query.get("propagationPolicy").map(String::as_str),
            query.get("orphanDependents").map(String::as_str),
            &b,
        )?,
    })
}

/// Whether `obj` has a deletionTimestamp.
fn deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// Deletes one object; returns the deleted (or now terminating) object.
pub(super) async fn delete_one(
    state: &ApiState,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Value, ApiError> {
    let (cur, mut obj) = read_current(state, def, ns, name).await?;
    let precondition_failed = opts
        .rv
        .as_ref()
        .is_some_and(|rv| *rv != cur.mod_revision.to_string())
        || opts
            .uid
            .as_ref()
            .is_some_and(|u| obj["metadata"]["uid"].as_str() != Some(u));
    if precondition_failed {
        return Err(ApiError::Conflict {
            resource: def.qualified(),
            name: name.to_string(),
            message: "Precondition failed".into(),
        });
    }
    if def.kind == "Namespace" {
        return delete_namespace(state, def, cur, obj, opts).await;
    }
    let (finalizers_changed, finalizers) = deletion_finalizers(def, &obj, &opts.propagation);
    let graceful_pod = def.kind == "Pod"
        && !obj["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
        && opts.grace.unwrap_or_else(|| {
            obj["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        }) > 0
        && obj["status"]["phase"] != "Succeeded"
        && obj["status"]["phase"] != "Failed";
    if !finalizers.is_empty() || graceful_pod {
        let mut changed = false;
        if !deleting(&obj) {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            let grace = if graceful_pod {
                opts.grace
                    .or(obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30)
            } else {
                0
            };
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            changed = true;
        }
        if finalizers_changed {
            obj["metadata"]["finalizers"] = json!(finalizers);
            changed = true;
        }
        if !changed || opts.dry_run {
            return Ok(obj);
        }
        let rev = state
            .store
            .update(&cur.key, encode_as(def, &obj), Some(cur.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, &def.qualified(), name))?;
        return Ok(with_rv(obj, rev));
    }
    if opts.dry_run {
        return Ok(obj);
    }
    state
        .store
        .delete(&cur.key, Some(cur.mod_revision))
        .await
        .map_err(|e| ApiError::from_store(e, &def.qualified(), name))?;
    after_delete(state, def, &obj).await?;
    Ok(obj)
}

/// What follows the removal of `obj` from the store: a deleted CRD stops being served and its
/// custom resources are deleted (upstream's `customresourcecleanup` finalizer, done at once).
pub(super) async fn after_delete(
    state: &ApiState,
    def: &ResourceDef,
    obj: &Value,
) -> Result<(), ApiError> {
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        if def.strategy_kind() != "Event" && def.strategy_kind() != "Lease" {
            crate::admission::recalculate(state, ns).await?;
        }
    }
    if def.strategy_kind() != crate::crd::CRD_KIND {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let served: Vec<&'static ResourceDef> = crate::crd::defs()
        .into_iter()
        .filter(|d| crate::crd::served(d).is_some_and(|s| s.crd == name))
        .collect();
    crate::crd::unregister(name);
    let group = obj["spec"]["group"].as_str().unwrap_or("");
    let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or("");
    let prefix = match served.first() {
        Some(d) => d.key_prefix(),
        None if !group.is_empty() && !plural.is_empty() => format!("/registry/{group}/{plural}/"),
        None => return Ok(()),
    };
    delete_under(state, &prefix).await
}

/// Removes every stored object under key `prefix` (one already gone is fine).
async fn delete_under(state: &ApiState, prefix: &str) -> Result<(), ApiError> {
    let page = state
        .store
        .list(prefix, 0, None)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    for kv in page.items {
        match state.store.delete(&kv.key, None).await {
            Ok(_) | Err(kennel_store::StoreError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    Ok(())
}

/// Namespace deletion (upstream's namespace REST `Delete`): the first DELETE marks the namespace
/// Terminating with a deletionTimestamp; it leaves the store once both `spec.finalizers` (emptied
/// by the namespace controller through `finalize`) and `metadata.finalizers` are empty.
async fn delete_namespace(
    state: &ApiState,
    def: &ResourceDef,
    cur: kennel_store::KeyValue,
    mut obj: Value,
    opts: &DeleteOpts,
) -> Result<Value, ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
        return Err(ApiError::Forbidden(format!(
            "namespace \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let mut changed = false;
    if !deleting(&obj) {
        obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        obj["status"]["phase"] = json!("Terminating");
        changed = true;
    }
    let (finalizers_changed, finalizers) = deletion_finalizers(def, &obj, &opts.propagation);
    if finalizers_changed {
        obj["metadata"]["finalizers"] = json!(finalizers);
        changed = true;
    }
    let spec_finalized = obj["spec"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    if opts.dry_run {
        return Ok(obj);
    }
    if spec_finalized && finalizers.is_empty() {
        state
            .store
            .delete(&cur.key, Some(cur.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, &def.qualified(), &name))?;
        return Ok(obj);
    }
    if !changed {
        return Ok(obj);
    }
    let rev = state
        .store
        .update(&cur.key, encode_as(def, &obj), Some(cur.mod_revision))
        .await
        .map_err(|e| ApiError::from_store(e, &def.qualified(), &name))?;
    Ok(with_rv(obj, rev))
}

/// DELETE one object. As upstream, 202 Accepted answers an explicit `orphanDependents: false`
/// whose object is still there; everything else 200 with the (deleted or terminating) object.
pub async fn delete(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let opts = delete_opts(query, headers, body)?;
    let name = t.name.clone().unwrap_or_default();
    let obj = delete_one(state, t.def, ns_of(t.def, t).as_deref(), &name, &opts).await?;
    let code = if deleting(&obj) && opts.propagation.orphan_dependents == Some(false) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(json_response(code, &obj, &[]))
}

/// DELETE a collection (with selectors), each object as one DELETE with the same options.
pub async fn delete_collection(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    let opts = delete_opts(query, headers, body)?;
    let filter = Filter::from_query(def, query)?;
    let ns = ns_of(def, t);
    let (items, _, _) = collect(state, def, ns.as_deref(), &filter, 0, None).await?;
    for obj in items {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        match delete_one(state, def, ns.as_deref(), &name, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &success(json!({"kind": def.plural, "group": def.group})),
        &[],
    ))
}
