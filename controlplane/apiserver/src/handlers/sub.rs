//! Subresources: `/scale` (autoscaling/v1 Scale) and `pods/{name}/binding`.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::write::{apply_patch, store_update};
use super::{json_response, ns_of, read_current, ApiState, WriteOpts};
use crate::request::{self, normalize, Query, Target};
use crate::selectors::LabelSelector;
use crate::status::{success, ApiError};

fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": LabelSelector::from_any(&obj["spec"]["selector"]).render(),
        },
    })
}

/// GET/PUT/PATCH `.../{name}/scale`.
pub async fn scale(
    state: &ApiState,
    t: &Target,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    let name = t.name.clone().unwrap_or_default();
    let ns = ns_of(def, t);
    if *method == Method::GET {
        let (_, obj) = read_current(state, def, ns.as_deref(), &name).await?;
        return Ok(json_response(StatusCode::OK, &scale_of(&obj), &[]));
    }
    if *method != Method::PUT && *method != Method::PATCH {
        return Err(ApiError::MethodNotAllowed);
    }
    let opts = WriteOpts::from_query(query)?;
    let doc = request::parse_body(headers, body)?;
    for _ in 0..16 {
        let (cur, obj) = read_current(state, def, ns.as_deref(), &name).await?;
        let current_scale = scale_of(&obj);
        let new_scale = if *method == Method::PUT {
            doc.clone()
        } else {
            apply_patch(&current_scale, &doc, &request::patch_type(headers))?
        };
        let (new_scale, _) = normalize(def, "Scale", "autoscaling/v1", new_scale, opts.validation)?;
        if let Some(rv) = new_scale["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if rv != cur.mod_revision.to_string() {
                return Err(ApiError::Conflict {
                    resource: def.qualified(),
                    name,
                    message: "the object has been modified; please apply your changes to the latest version and try again".into(),
                });
            }
        }
        let replicas = new_scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::Invalid {
                kind: "Scale".into(),
                name,
                causes: vec![crate::status::Cause::invalid(
                    "spec.replicas",
                    &replicas.to_string(),
                    "must be greater than or equal to 0",
                )],
            });
        }
        let mut updated = obj.clone();
        updated["spec"]["replicas"] = json!(replicas);
        if updated["spec"] != obj["spec"] {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            updated["metadata"]["generation"] = json!(g + 1);
        }
        match store_update(state, def, &cur, updated, opts.dry_run).await {
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(json_response(StatusCode::OK, &scale_of(&out), &[])),
        }
    }
    Err(ApiError::Timeout("too many concurrent changes".into()))
}

/// POST `pods/{name}/binding`: assigns the pod to a node once.
pub async fn binding(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = t.def;
    let opts = WriteOpts::from_query(query)?;
    let name = t.name.clone().unwrap_or_default();
    let ns = ns_of(def, t);
    let raw = request::parse_body(headers, body)?;
    let (b, _) = normalize(def, "Binding", "v1", raw, opts.validation)?;
    let node = b["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::Invalid {
            kind: "Binding".into(),
            name,
            causes: vec![crate::status::Cause::required("target.name")],
        });
    }
    let (cur, mut pod) = read_current(state, def, ns.as_deref(), &name).await?;
    if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(ApiError::Conflict {
            resource: def.qualified(),
            name: name.clone(),
            message: format!("pod {name} is already assigned to node \"{existing}\""),
        });
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Err(ApiError::Conflict {
            resource: def.qualified(),
            name,
            message: "pod is being deleted, cannot be assigned to a host".into(),
        });
    }
    pod["spec"]["nodeName"] = json!(node);
    let mut conditions: Vec<Value> = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(json!({"type": "PodScheduled", "status": "True",
        "lastTransitionTime": crate::defaults::now_rfc3339(), "lastProbeTime": null}));
    pod["status"]["conditions"] = json!(conditions);
    store_update(state, def, &cur, pod, opts.dry_run).await?;
    Ok(json_response(StatusCode::CREATED, &success(json!({})), &[]))
}
