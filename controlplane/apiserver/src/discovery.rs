//! Discovery (`/api`, `/apis`, per group-version resource lists, the aggregated v2 form),
//! `/version` and the OpenAPI documents kubectl's validation and patching consult.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::handlers::json_response;
use super::registry::{self, group_versions, ResourceDef};
use super::status::ApiError;

/// Kubernetes version this server reports.
pub const KUBE_MINOR: &str = "33";

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-kennel"),
        "gitCommit": "kennel",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

fn resource_entries(gv_group: &str, gv_version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for r in registry::all()
        .into_iter()
        .filter(|r| r.group == gv_group && r.version == gv_version)
    {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for sub in r.subresources {
            let (kind, group, version, verbs) = registry::subresource_kind(r, sub);
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *sub == "scale" {
                e["group"] = json!(group);
                e["version"] = json!(version);
            }
            out.push(e);
        }
    }
    out
}

/// `GET /api/v1` or `/apis/{group}/{version}`.
pub fn group_version_resources(path: &str) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        ["apis", g] => return api_group(g),
        _ => return Err(ApiError::UnknownResource),
    };
    if !group_versions().contains(&(group, version)) {
        return Err(ApiError::UnknownResource);
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let body = json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resource_entries(group, version),
    });
    Ok(json_response(StatusCode::OK, &body, &[]))
}

fn group_json(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

fn api_group(group: &str) -> Result<Response, ApiError> {
    if !group_versions().iter().any(|(g, _)| *g == group) || group.is_empty() {
        return Err(ApiError::UnknownResource);
    }
    let mut body = group_json(group);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(json_response(StatusCode::OK, &body, &[]))
}

/// Whether the client accepts aggregated discovery (`apidiscovery.k8s.io/v2`).
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"))
}

fn aggregated(groups: &[&str]) -> Response {
    let items: Vec<Value> = groups
        .iter()
        .map(|group| {
            let versions: Vec<Value> = group_versions()
                .into_iter()
                .filter(|(g, _)| g == group)
                .map(|(g, v)| {
                    let resources: Vec<Value> = registry::all()
                        .into_iter()
                        .filter(|r| r.group == g && r.version == v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )],
        body.to_string(),
    )
        .into_response()
}

fn aggregated_resource(r: &ResourceDef) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (kind, group, version, verbs) = registry::subresource_kind(r, sub);
            json!({"subresource": sub, "responseKind": {"group": group, "version": version, "kind": kind}, "verbs": verbs})
        })
        .collect();
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
        "subresources": subs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

/// `GET /api`.
pub fn core_versions(headers: &HeaderMap) -> Response {
    if wants_aggregated(headers) {
        return aggregated(&[""]);
    }
    let body = json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    });
    json_response(StatusCode::OK, &body, &[])
}

/// `GET /apis`.
pub fn groups(headers: &HeaderMap) -> Response {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    if wants_aggregated(headers) {
        return aggregated(&names);
    }
    let body = json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": names.iter().map(|g| group_json(g)).collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, &body, &[])
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_index() -> Response {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kennel{KUBE_MINOR}")}),
        );
    }
    json_response(StatusCode::OK, &json!({"paths": paths}), &[])
}

fn operations(r: &ResourceDef) -> (String, Value) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let path = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    };
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let q = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let params = json!([q("dryRun"), q("fieldManager"), q("fieldValidation")]);
    let body = json!({"content": {
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}},
    }});
    let op = |verb: &str| {
        json!({
            "operationId": format!("{verb}{}", r.kind),
            "parameters": params,
            "requestBody": body,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    (
        path,
        json!({"patch": op("patch"), "put": op("put"), "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}}}),
    )
}

/// `GET /openapi/v3/{api/v1|apis/g/v}`: paths with the `fieldValidation` parameter, so kubectl
/// relies on server-side field validation.
pub fn openapi_v3_doc(rest: &str) -> Result<Response, ApiError> {
    let gv = group_versions()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == rest.trim_matches('/'))
        .ok_or(ApiError::UnknownResource)?;
    let mut paths = serde_json::Map::new();
    for r in registry::all()
        .into_iter()
        .filter(|r| (r.group, r.version) == gv)
    {
        let (p, ops) = operations(r);
        paths.insert(p, ops);
    }
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    });
    Ok(json_response(StatusCode::OK, &doc, &[]))
}

/// `GET /openapi/v2`, as JSON or as protobuf (what kubectl asks for).
pub fn openapi_v2(headers: &HeaderMap) -> Result<Response, ApiError> {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if accept.contains("protobuf") {
        return Ok((
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            super::openapi_pb::document(&format!("v1.{KUBE_MINOR}.0")),
        )
            .into_response());
    }
    if !accept.contains("json") && !accept.contains("*/*") {
        return Err(ApiError::NotAcceptable("application/json".into()));
    }
    let mut paths = serde_json::Map::new();
    for r in registry::all() {
        let (p, mut ops) = operations(r);
        for verb in ["patch", "put"] {
            ops[verb]["parameters"] = json!([
                {"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true},
                {"name": "fieldManager", "in": "query", "type": "string", "uniqueItems": true},
                {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true},
            ]);
            if let Some(o) = ops[verb].as_object_mut() {
                o.remove("requestBody");
            }
        }
        paths.insert(p, ops);
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
        "definitions": {},
    });
    Ok(json_response(StatusCode::OK, &doc, &[]))
}
