//! Create, update (PUT) and patch (JSON, merge, strategic), for objects and their status.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{encode_as, json_response, ns_of, read_current, with_rv, ApiState, WriteOpts};
use crate::defaults::{self, apply_defaults, initial_status, spec_part};
use crate::registry::{self, ResourceDef};
use crate::request::{self, normalize, Query, Target};
use crate::services;
use crate::status::ApiError;
use crate::strategic::strategic_merge;
use crate::validate::validate;
use kennel_store::KeyValue;

/// How many times a patch is retried when the object changes underneath it.
const PATCH_RETRIES: usize = 16;

/// Checks the namespace exists and is not terminating.
pub async fn check_namespace(state: &ApiState, ns: &str) -> Result<(), ApiError> {
    let nsdef = registry::find("", "v1", "namespaces").expect("namespaces registered");
    let kv = state
        .store
        .get(&nsdef.key(None, ns))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(kv) = kv else {
        return Err(ApiError::NotFound {
            resource: "namespaces".into(),
            name: ns.to_string(),
        });
    };
    let obj = super::decode(&kv)?;
    if obj["status"]["phase"] == "Terminating" {
        return Err(ApiError::Forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(())
}

/// Recounts the quotas of `ns` (a charged quota whose object did not get stored, a new quota).
async fn recount(state: &ApiState, ns: Option<&str>) {
    if let Some(ns) = ns {
        if let Err(e) = crate::admission::recalculate(state, ns).await {
            tracing::warn!(error = %e, "recounting quotas");
        }
    }
}

/// POST: create an object.
pub async fn create(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    let opts = WriteOpts::from_query(query)?;
    let raw = request::parse_body(headers, body)?;
    let (mut obj, warnings) = normalize(def, def.kind, &def.api_version(), raw, opts.validation)?;
    let ns = ns_of(def, t);
    let meta = &mut obj["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if def.namespaced {
        let url_ns = ns.clone().unwrap_or_default();
        match meta["namespace"].as_str() {
            Some(n) if !n.is_empty() && n != url_ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ))
            }
            _ => meta["namespace"] = json!(url_ns),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    if meta["name"].as_str().unwrap_or("").is_empty() {
        if let Some(g) = meta["generateName"].as_str().filter(|g| !g.is_empty()) {
            meta["name"] = json!(format!("{g}{}", defaults::random_suffix()));
        }
    }
    let m = meta.as_object_mut().expect("metadata object");
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        m.remove(k);
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(defaults::now_rfc3339()));
    if obj.get("spec").is_some() {
        obj["metadata"]["generation"] = json!(1);
    }
    apply_defaults(def.strategy_kind(), &mut obj);
    if def.strategy_kind() == "Namespace" {
        require_kubernetes_finalizer(&mut obj);
    }
    if def.strategy_kind() == "Job" {
        defaults::job_selector(&mut obj);
    }
    crate::admission::mutate(state, def, ns.as_deref(), &mut obj).await?;
    if let Some(s) = initial_status(def.strategy_kind(), &obj) {
        obj["status"] = s;
        apply_defaults(def.strategy_kind(), &mut obj);
    }
    validate(def.strategy_kind(), &obj)?;
    rbac_escalation(state, def, ns.as_deref(), &obj).await?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if let Some(ns) = &ns {
        check_namespace(state, ns).await?;
    }
    let key = def.key(ns.as_deref(), &name);
    if state.store.get(&key).await.ok().flatten().is_some() {
        return Err(ApiError::AlreadyExists {
            resource: def.qualified(),
            name,
        });
    }
    crate::admission::validate(state, def, ns.as_deref(), &obj, opts.dry_run).await?;
    let held = if def.kind == "Service" {
        match services::admit(state, None, &mut obj).await {
            Ok(held) => held,
            Err(e) => {
                recount(state, ns.as_deref()).await;
                return Err(e);
            }
        }
    } else {
        services::Held::default()
    };
    if opts.dry_run {
        held.release(state.store.as_ref()).await;
        return Ok(json_response(StatusCode::CREATED, &obj, &warnings));
    }
    let rev = match state.store.create(&key, encode_as(def, &obj)).await {
        Ok(rev) => rev,
        Err(e) => {
            held.release(state.store.as_ref()).await;
            recount(state, ns.as_deref()).await;
            return Err(ApiError::from_store(e, &def.qualified(), &name));
        }
    };
    if def.strategy_kind() == "ResourceQuota" {
        recount(state, ns.as_deref()).await;
    }
    if def.strategy_kind() == crate::crd::CRD_KIND {
        crate::crd::register(&obj);
    }
    Ok(json_response(
        StatusCode::CREATED,
        &with_rv(obj, rev),
        &warnings,
    ))
}

/// A new namespace always carries the `kubernetes` finalizer in `spec.finalizers` (upstream's
/// namespace strategy): the namespace controller removes it once the content is gone.
fn require_kubernetes_finalizer(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    let list = &mut spec["finalizers"];
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("array");
    if !list.iter().any(|f| f == NAMESPACE_FINALIZER) {
        list.push(json!(NAMESPACE_FINALIZER));
    }
}

/// The namespace controller's finalizer in a Namespace's `spec.finalizers`.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Whether an object being deleted may leave the store: no finalizers left (and, for a
/// namespace, no `spec.finalizers` either).
fn finalized(def: &ResourceDef, obj: &Value) -> bool {
    let empty = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
    !obj["metadata"]["deletionTimestamp"].is_null()
        && empty(&obj["metadata"]["finalizers"])
        && (def.strategy_kind() != "Namespace" || empty(&obj["spec"]["finalizers"]))
}

/// Merges an incoming object with the stored one per the update rules: server-owned metadata is
/// kept, status only changes through `/status`, generation bumps on spec changes.
pub fn merge_update(def: &ResourceDef, old: &Value, mut new: Value, status_only: bool) -> Value {
    if status_only {
        let mut out = old.clone();
        match new.get_mut("status").map(Value::take) {
            Some(st) if !st.is_null() => out["status"] = st,
            _ => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return out;
    }
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if def.strategy_kind() == "Namespace" {
        // `spec.finalizers` only changes through `finalize`.
        match old["spec"].get("finalizers") {
            Some(f) => new["spec"]["finalizers"] = f.clone(),
            None => {
                if let Some(m) = new["spec"].as_object_mut() {
                    m.remove("finalizers");
                }
            }
        }
    }
    if def.has("status") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    apply_defaults(def.strategy_kind(), &mut new);
    if def.strategy_kind() == crate::crd::CRD_KIND {
        new["status"] = crate::crd::status(&new, Some(old));
    }
    if spec_part(&new) != spec_part(old) && !old["metadata"]["generation"].is_null() {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    new
}

/// RBAC's privilege-escalation check for a Role, ClusterRole or binding written by the request's
/// user (internal writes, with no request user, are not checked).
async fn rbac_escalation(
    state: &ApiState,
    def: &ResourceDef,
    ns: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    if def.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let (Some(z), Some(user)) = (state.authz.as_deref(), crate::auth::current_user()) else {
        return Ok(());
    };
    z.check_escalation(&user, def, ns, obj).await
}

/// Writes `new` over `cur` with compare-and-swap; removes the object instead when its last
/// finalizer went away during deletion. Returns the stored object.
pub async fn store_update(
    state: &ApiState,
    def: &ResourceDef,
    cur: &KeyValue,
    new: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    validate(def.strategy_kind(), &new)?;
    rbac_escalation(state, def, new["metadata"]["namespace"].as_str(), &new).await?;
    let name = new["metadata"]["name"].as_str().unwrap_or("").to_string();
    let finalizing = finalized(def, &new);
    if dry_run {
        return Ok(new);
    }
    if finalizing {
        let (_, rev) = state
            .store
            .delete(&cur.key, Some(cur.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, &def.qualified(), &name))?;
        super::delete::after_delete(state, def, &new).await?;
        return Ok(with_rv(new, rev));
    }
    let encoded = encode_as(def, &new);
    // A no-op write keeps the revision (as upstream): level-triggered controllers that write the
    // same status again must not wake every watcher.
    let unchanged = serde_json::from_slice::<Value>(&encoded).ok()
        == serde_json::from_slice::<Value>(&cur.value).ok();
    if unchanged {
        return Ok(with_rv(new, cur.mod_revision));
    }
    let rev = state
        .store
        .update(&cur.key, encoded, Some(cur.mod_revision))
        .await
        .map_err(|e| ApiError::from_store(e, &def.qualified(), &name))?;
    if def.strategy_kind() == crate::crd::CRD_KIND {
        crate::crd::register(&new);
    }
    let finished_pod = def.strategy_kind() == "Pod"
        && crate::admission::quota::terminal(&new)
        && !serde_json::from_slice::<Value>(&cur.value)
            .is_ok_and(|o| crate::admission::quota::terminal(&o));
    if def.strategy_kind() == "ResourceQuota" || finished_pod {
        if let Some(ns) = new["metadata"]["namespace"].as_str() {
            crate::admission::recalculate(state, ns).await?;
        }
    }
    Ok(with_rv(new, rev))
}

/// [`store_update`] after the admission a kind needs: a Service's allocated values are kept,
/// new ones reserved (and released again when the write fails).
async fn admitted_update(
    state: &ApiState,
    t: &Target,
    cur: &KeyValue,
    old: &Value,
    mut new: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if t.def.kind != "Service" || t.sub.is_some() {
        return store_update(state, t.def, cur, new, dry_run).await;
    }
    let held = services::admit(state, Some(old), &mut new).await?;
    let out = store_update(state, t.def, cur, new, dry_run).await;
    if dry_run || out.is_err() {
        held.release(state.store.as_ref()).await;
    }
    out
}

fn conflict(def: &ResourceDef, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: def.qualified(),
        name: name.to_string(),
        message: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

/// PUT: replace an object (or its status).
pub async fn update(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    let opts = WriteOpts::from_query(query)?;
    let name = t.name.clone().unwrap_or_default();
    let raw = request::parse_body(headers, body)?;
    let (new, warnings) = normalize(def, def.kind, &def.api_version(), raw, opts.validation)?;
    if new["metadata"]["name"].as_str().unwrap_or("") != name {
        return Err(ApiError::BadRequest(
            "the name of the object does not match the name on the URL".into(),
        ));
    }
    let ns = ns_of(def, t);
    let (cur, old) = read_current(state, def, ns.as_deref(), &name).await?;
    if let Some(rv) = new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        if rv != cur.mod_revision.to_string() {
            return Err(conflict(def, &name));
        }
    }
    let merged = merge_update(def, &old, new, t.sub.as_deref() == Some("status"));
    let out = admitted_update(state, t, &cur, &old, merged, opts.dry_run).await?;
    Ok(json_response(StatusCode::OK, &out, &warnings))
}

/// Checks the names in a namespace's `spec.finalizers` (upstream's `validateFinalizerName`).
fn validate_namespace_finalizers(name: &str, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    for (i, f) in obj["spec"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("spec.finalizers[{i}]");
        let Some(f) = f.as_str() else {
            causes.push(crate::status::Cause::invalid(
                field,
                &f.to_string(),
                "must be a string",
            ));
            continue;
        };
        let standard = matches!(
            f,
            NAMESPACE_FINALIZER | super::cascade::ORPHAN | super::cascade::FOREGROUND
        );
        if f.is_empty() || (!f.contains('/') && !standard) {
            causes.push(crate::status::Cause::invalid(
                field,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: "Namespace".into(),
        name: name.to_string(),
        causes,
    })
}

/// PUT `namespaces/{name}/finalize`: replaces `spec.finalizers` (nothing else); a terminating
/// namespace whose finalizers are all gone leaves the store.
pub async fn finalize(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    if def.strategy_kind() != "Namespace" {
        return Err(ApiError::MethodNotAllowed);
    }
    let opts = WriteOpts::from_query(query)?;
    let name = t.name.clone().unwrap_or_default();
    let raw = request::parse_body(headers, body)?;
    let (new, warnings) = normalize(def, def.kind, &def.api_version(), raw, opts.validation)?;
    if new["metadata"]["name"].as_str().unwrap_or("") != name {
        return Err(ApiError::BadRequest(
            "the name of the object does not match the name on the URL".into(),
        ));
    }
    validate_namespace_finalizers(&name, &new)?;
    let (cur, old) = read_current(state, def, None, &name).await?;
    if let Some(rv) = new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        if rv != cur.mod_revision.to_string() {
            return Err(conflict(def, &name));
        }
    }
    let mut out = old.clone();
    if !out["spec"].is_object() {
        out["spec"] = json!({});
    }
    out["spec"]["finalizers"] = match new["spec"].get("finalizers") {
        Some(f) if !f.is_null() => f.clone(),
        _ => json!([]),
    };
    let out = store_update(state, def, &cur, out, opts.dry_run).await?;
    Ok(json_response(StatusCode::OK, &out, &warnings))
}

/// Applies a patch document of `patch_type` to `obj`.
pub fn apply_patch(obj: &Value, patch: &Value, patch_type: &str) -> Result<Value, ApiError> {
    match patch_type {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            let mut out = obj.clone();
            json_patch::patch(&mut out, &p)
                .map_err(|e| ApiError::Invalid {
                    kind: "JSONPatch".into(),
                    name: String::new(),
                    causes: vec![crate::status::Cause {
                        reason: "FieldValueInvalid",
                        message: e.to_string(),
                        field: "patch".into(),
                    }],
                })?;
            Ok(out)
        }
        "application/merge-patch+json" => {
            let mut out = obj.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        "application/strategic-merge-patch+json" => strategic_merge(obj, patch)
            .map_err(|e| ApiError::BadRequest(format!("invalid strategic merge patch: {e}"))),
        // Server-side apply, approximated: the applied configuration is merged like a strategic
        // merge patch (no field ownership, so fields dropped from a later apply are kept).
        "application/apply-patch+yaml" => strategic_merge(obj, patch)
            .map_err(|e| ApiError::BadRequest(format!("invalid apply configuration: {e}"))),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other})"
        ))),
    }
}

/// A JSON patch is a list of operations; every other patch type is an object (a scalar or a
/// list there is refused with 400, as upstream's decoder does).
fn check_patch_shape(doc: &Value, patch_type: &str) -> Result<(), ApiError> {
    let (ok, want) = if patch_type == "application/json-patch+json" {
        (doc.is_array(), "a list of operations")
    } else {
        (doc.is_object(), "an object")
    };
    if ok {
        return Ok(());
    }
    let got = match doc {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    Err(ApiError::BadRequest(format!(
        "the body of a {patch_type} patch must be {want}, not {got}"
    )))
}

/// PATCH an object (or its status), retrying on concurrent changes.
pub async fn patch(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    let opts = WriteOpts::from_query(query)?;
    let name = t.name.clone().unwrap_or_default();
    let ptype = request::patch_type(headers);
    let patch_doc = request::parse_body(headers, body)?;
    check_patch_shape(&patch_doc, &ptype)?;
    let ns = ns_of(def, t);
    let apply = ptype == "application/apply-patch+yaml";
    if apply && query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::Invalid {
            kind: "PatchOptions".into(),
            name: String::new(),
            causes: vec![crate::status::Cause::required("fieldManager")],
        });
    }
    for _ in 0..PATCH_RETRIES {
        let (cur, old) = match read_current(state, def, ns.as_deref(), &name).await {
            Err(ApiError::NotFound { .. }) if apply && t.sub.is_none() => {
                // Apply creates the object when it does not exist yet.
                let mut doc = patch_doc.clone();
                if doc["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                    return Err(ApiError::BadRequest(
                        "the name of the object does not match the name on the URL".into(),
                    ));
                }
                doc["metadata"]["name"] = Value::String(name.clone());
                let mut json_headers = HeaderMap::new();
                json_headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                );
                match create(state, t, query, &json_headers, doc.to_string().as_bytes()).await {
                    Err(ApiError::AlreadyExists { .. }) => continue,
                    other => return other,
                }
            }
            other => other?,
        };
        let patched = apply_patch(&old, &patch_doc, &ptype)?;
        let (new, warnings) =
            normalize(def, def.kind, &def.api_version(), patched, opts.validation)?;
        let rv = new["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !rv.is_empty() && rv != cur.mod_revision.to_string() {
            return Err(conflict(def, &name));
        }
        if new["metadata"]["name"].as_str() != Some(name.as_str()) {
            return Err(ApiError::BadRequest(
                "the patch may not change the object's name".into(),
            ));
        }
        let merged = merge_update(def, &old, new, t.sub.as_deref() == Some("status"));
        match admitted_update(state, t, &cur, &old, merged, opts.dry_run).await {
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(json_response(StatusCode::OK, &out, &warnings)),
        }
    }
    Err(ApiError::Timeout(format!(
        "too many concurrent changes to {} {name}",
        def.qualified()
    )))
}
