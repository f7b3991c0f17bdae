//! Parsing of resource URLs, query parameters, bodies and `Accept` headers.

use std::collections::HashMap;

use axum::http::HeaderMap;
use serde_json::Value;

use super::registry::{self, ResourceDef};
use super::status::ApiError;
use super::validate;

/// Largest accepted request body (3 MiB, as upstream).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a resource URL names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub def: &'static ResourceDef,
    /// Namespace from the URL, for namespaced resources.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `binding`, `log`).
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` or `/apis/{group}/{version}/...` into a [`Target`]; `Ok(None)` when the
/// path is a group-version root (discovery).
pub fn parse_path(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        ["apis", _] => return Ok(None),
        _ => return Err(ApiError::UnknownResource),
    };
    let rest: Vec<&str> = rest.iter().copied().filter(|s| !s.is_empty()).collect();
    if rest.is_empty() {
        return Ok(None);
    }
    let find =
        |plural: &str| registry::find(group, version, plural).ok_or(ApiError::UnknownResource);
    let target = match rest.as_slice() {
        ["namespaces", ns, plural, tail @ ..]
            if registry::find(group, version, plural).is_some_and(|d| d.namespaced) =>
        {
            let def = find(plural)?;
            match tail {
                [] => Target {
                    def,
                    namespace: Some(ns.to_string()),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    def,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, sub] => Target {
                    def,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                },
                _ => return Err(ApiError::UnknownResource),
            }
        }
        [plural] => Target {
            def: find(plural)?,
            namespace: None,
            name: None,
            sub: None,
        },
        [plural, name] => {
            let def = find(plural)?;
            if def.namespaced {
                return Err(ApiError::UnknownResource);
            }
            Target {
                def,
                namespace: None,
                name: Some(name.to_string()),
                sub: None,
            }
        }
        [plural, name, sub] => {
            let def = find(plural)?;
            if def.namespaced {
                return Err(ApiError::UnknownResource);
            }
            Target {
                def,
                namespace: None,
                name: Some(name.to_string()),
                sub: Some(sub.to_string()),
            }
        }
        _ => return Err(ApiError::UnknownResource),
    };
    if let Some(sub) = &target.sub {
        if !target.def.has(sub) {
            return Err(ApiError::UnknownResource);
        }
    }
    Ok(Some(target))
}

/// Query parameters as a map (last value wins).
pub type Query = HashMap<String, String>;

/// Parses the raw query string.
pub fn parse_query(raw: Option<&str>) -> Query {
    raw.map(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a boolean query flag is set (`true`/`1`).
pub fn flag(q: &Query, key: &str) -> bool {
    // Upstream's query conversion (`Convert_Slice_string_To_bool`): present and not "false"
    // or "0" (in any case) is true — the Python client sends `watch=True`.
    q.get(key)
        .is_some_and(|v| !v.eq_ignore_ascii_case("false") && v != "0")
}

/// Whether the request asks for dry run.
pub fn dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Invalid dry run value: {other:?}; supported value is \"All\""
        ))),
    }
}

/// `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields fail the request.
    Strict,
    /// Unknown fields are dropped with a `Warning` header.
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

/// Reads `fieldValidation` (default Warn).
pub fn field_validation(q: &Query) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::BadRequest(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
        ))),
    }
}

/// Whether the client asked for a `Table`.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The content type of a PATCH request.
pub fn patch_type(headers: &HeaderMap) -> String {
    content_type(headers)
}

/// Parses a JSON or YAML body into a value, naming the problem on failure.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let ct = content_type(headers);
    match ct.as_str() {
        "application/yaml"
        | "application/x-yaml"
        | "text/yaml"
        | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML body: {e}"))),
        "application/json"
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | ""
        | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding JSON body: {e}"))),
        "application/vnd.kubernetes.protobuf" => {
            super::protobuf::decode_body(body).map_err(|e| match e {
                super::protobuf::ProtobufError::UnsupportedKind(_) => {
                    ApiError::UnsupportedMediaType(e.to_string())
                }
                other => ApiError::BadRequest(format!("error decoding protobuf body: {other}")),
            })
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

/// Normalizes an object of `def`'s kind: fills `apiVersion`/`kind`, checks them, decodes it through
/// the typed schema and applies `fieldValidation`. Returns the object and any warnings.
pub fn normalize(
    def: &ResourceDef,
    kind: &str,
    api_version: &str,
    mut obj: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest(format!(
            "the body of the request must be a {kind} object"
        )));
    }
    for (field, want) in [("kind", kind), ("apiVersion", api_version)] {
        match obj.get(field).and_then(Value::as_str) {
            None | Some("") => obj[field] = Value::String(want.to_string()),
            Some(got) if got != want => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({}) does not match the expected API version ({api_version}) or kind {kind} (got {got} for {field}) of {}",
                    obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                    def.qualified()
                )))
            }
            _ => {}
        }
    }
    let (known, unknown) = if crate::crd::served(def).is_some() {
        // A custom resource: its schema defaults, prunes and validates (422 with causes).
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let done = crate::crd::admit(def, &mut obj);
        if !done.causes.is_empty() {
            return Err(ApiError::Invalid {
                kind: kind.to_string(),
                name,
                causes: done.causes,
            });
        }
        (obj, done.pruned)
    } else {
        let known = validate::roundtrip(kind, &obj)?;
        let unknown = validate::unknown_fields(&obj, &known);
        (known, unknown)
    };
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let msgs: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match fv {
            FieldValidation::Strict => {
                return Err(ApiError::BadRequest(format!(
                    "strict decoding error: {}",
                    msgs.join(", ")
                )))
            }
            FieldValidation::Warn => warnings = msgs,
            FieldValidation::Ignore => {}
        }
    }
    Ok((known, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/default/pods/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.def.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/default").unwrap().unwrap();
        assert_eq!(
            (t.def.plural, t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = parse_path("/api/v1/namespaces/x/status").unwrap().unwrap();
        assert_eq!(
            (t.def.plural, t.name.as_deref(), t.sub.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let t = parse_path("/apis/apps/v1/deployments").unwrap().unwrap();
        assert_eq!((t.def.plural, t.namespace), ("deployments", None));
        assert!(parse_path("/apis/apps/v1").unwrap().is_none());
        assert!(parse_path("/api/v1/nonsense").is_err());
        assert!(parse_path("/api/v1/namespaces/a/pods/b/scale").is_err());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert!(flag(&q, "watch"));
        for (v, want) in [
            ("True", true),
            ("TRUE", true),
            ("t", true),
            ("", true),
            ("False", false),
            ("0", false),
        ] {
            let q = parse_query(Some(&format!("watch={v}")));
            assert_eq!(flag(&q, "watch"), want, "watch={v}");
        }
        assert!(!flag(&parse_query(None), "watch"));
    }
}
