//! Resource handlers, generic over the registry: one dispatcher routes by method and URL shape
//! to read (get/list/watch), write (create/update/patch), delete (+ owner cascade) and
//! subresource operations (`pods/log` streams from the pod's node).

mod cascade;
mod delete;
mod log;
pub mod metrics;
mod read;
pub mod stream;
mod sub;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::registry::ResourceDef;
use super::request::{self, parse_path, Query, Target, MAX_BODY};
use super::status::ApiError;
use kennel_store::{KeyValue, Store};

pub use log::KubeletClient;

/// Shared state of the API server.
#[derive(Clone)]
pub struct ApiState {
    /// The backing store.
    pub store: Arc<dyn Store>,
    /// How to reach node agents (`pods/log`); `None` answers those requests with an error.
    pub kubelet: Option<Arc<KubeletClient>>,
    /// The Service network (ClusterIP and NodePort ranges).
    pub services: Arc<crate::services::ServiceNetwork>,
    /// Authentication; `None` disables it (every request is an admin: plain local testing only).
    pub authn: Option<Arc<crate::auth::authn::Authenticator>>,
    /// Authorization; `None` allows every authenticated request.
    pub authz: Option<Arc<crate::auth::authz::Authorizer>>,
    /// The audit log, when one is configured.
    pub audit: Option<Arc<crate::auth::audit::AuditLog>>,
    /// Admission plugins switched off (upstream's `--disable-admission-plugins`, e.g.
    /// `ServiceAccount` for a server without a controller manager).
    pub disabled_admission: Arc<Vec<String>>,
}

/// Decodes a stored value and stamps its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("corrupt object at {}: {e}", kv.key)))?;
    v["metadata"]["resourceVersion"] = Value::String(kv.mod_revision.to_string());
    Ok(v)
}

/// Decodes a stored value as the form `def` serves.
pub fn decode_as(def: &ResourceDef, kv: &KeyValue) -> Result<Value, ApiError> {
    Ok(crate::convert::from_storage(def, decode(kv)?))
}

/// Encodes an object of `def` for storage.
pub fn encode_as(def: &ResourceDef, obj: &Value) -> Vec<u8> {
    encode(&crate::convert::to_storage(def, obj))
}

/// Encodes an object for storage (without `resourceVersion`, which the store assigns).
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

/// Sets the `resourceVersion` of an object about to be returned.
pub fn with_rv(mut obj: Value, rev: i64) -> Value {
    obj["metadata"]["resourceVersion"] = Value::String(rev.to_string());
    obj
}

/// A JSON response with optional `Warning` headers.
pub fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

/// The object's namespace and name as used in keys.
pub fn ns_of(def: &ResourceDef, t: &Target) -> Option<String> {
    if def.namespaced {
        t.namespace.clone()
    } else {
        None
    }
}

/// Reads one object or answers 404.
pub async fn read_current(
    state: &ApiState,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
) -> Result<(KeyValue, Value), ApiError> {
    let key = def.key(ns, name);
    let kv = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, &def.qualified(), name))?
        .ok_or_else(|| ApiError::NotFound {
            resource: def.qualified(),
            name: name.to_string(),
        })?;
    let obj = decode_as(def, &kv)?;
    Ok((kv, obj))
}

/// Entry point for every `/api/...` and `/apis/...` resource request.
pub async fn dispatch(
    state: ApiState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route(state, method, uri, headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn route(
    state: ApiState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(target) = parse_path(uri.path())? else {
        return Ok(super::discovery::group_version_resources(uri.path())?.into_response());
    };
    let query = request::parse_query(uri.query());
    let body = read_body(body).await?;
    let t = &target;
    match (&method, t.name.is_some(), t.sub.as_deref()) {
        (&Method::GET, false, None) => {
            if request::flag(&query, "watch") {
                read::watch(&state, t, &query, &headers).await
            } else {
                read::list(&state, t, &query, &headers).await
            }
        }
        (&Method::GET, true, None) => read::get(&state, t, &headers, &query).await,
        (&Method::POST, false, None) => write::create(&state, t, &query, &headers, &body).await,
        (&Method::PUT, true, None | Some("status")) => {
            write::update(&state, t, &query, &headers, &body).await
        }
        (&Method::PATCH, true, None | Some("status")) => {
            write::patch(&state, t, &query, &headers, &body).await
        }
        (&Method::DELETE, true, None) => delete::delete(&state, t, &query, &headers, &body).await,
        (&Method::DELETE, false, None) => {
            delete::delete_collection(&state, t, &query, &headers, &body).await
        }
        (&Method::PUT, true, Some("finalize")) => {
            write::finalize(&state, t, &query, &headers, &body).await
        }
        (&Method::GET, true, Some("status")) => read::get(&state, t, &headers, &query).await,
        (_, true, Some("scale")) => sub::scale(&state, t, &method, &query, &headers, &body).await,
        (&Method::POST, true, Some("binding")) => {
            sub::binding(&state, t, &query, &headers, &body).await
        }
        (&Method::GET, true, Some("log")) => Ok(log::get(&state, t, &query).await),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Bytes of an oversized body read (and dropped) before answering 413, so the client finishes
/// sending and sees the response instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a request body of at most [`MAX_BODY`] bytes.
pub async fn read_body(body: Body) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
    }
    if total > MAX_BODY {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    Ok(buf)
}

/// Shared parameters for writes.
pub struct WriteOpts {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub validation: request::FieldValidation,
}

impl WriteOpts {
    /// Reads the write options from the query.
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        Ok(Self {
            dry_run: request::dry_run(q)?,
            validation: request::field_validation(q)?,
        })
    }
}
