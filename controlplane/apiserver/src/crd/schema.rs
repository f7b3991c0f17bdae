//! Structural OpenAPI v3 schemas of custom resources, as apiextensions-apiserver applies them to
//! every write: defaults (`default`) filled in, unknown fields pruned (unless
//! `x-kubernetes-preserve-unknown-fields`), then validation with upstream's field paths and
//! messages (type, nullable, enum, required, string lengths and patterns, numeric bounds, item
//! counts, `x-kubernetes-int-or-string`, `x-kubernetes-list-type` set/map uniqueness,
//! `additionalProperties`).
//!
//! `apiVersion`, `kind` and `metadata` of the object are the server's business and are neither
//! pruned nor validated here.

use serde_json::{Map, Value};

use crate::status::Cause;

/// Keys at the root of an object that the schema does not govern.
const ROOT_KEYS: &[&str] = &["apiVersion", "kind", "metadata"];

/// Fills in `default`s from `schema` (objects' missing properties, recursively).
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    // Upstream drops nulls of non-nullable fields before defaulting.
                    if m.get(k).is_some_and(Value::is_null) && s["nullable"] != Value::Bool(true) {
                        m.remove(k);
                    }
                    if !m.contains_key(k) {
                        if let Some(d) = s.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(s, child);
                    }
                }
            }
            if let Some(extra) = schema["additionalProperties"].as_object() {
                let extra = Value::Object(extra.clone());
                let known = schema["properties"].as_object();
                for (k, child) in m.iter_mut() {
                    if known.is_none_or(|p| !p.contains_key(k)) {
                        apply_defaults(&extra, child);
                    }
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for item in items {
                apply_defaults(&schema["items"], item);
            }
        }
        _ => {}
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
        || schema["additionalProperties"] == Value::Bool(true)
}

/// Removes fields `schema` does not declare (at the root: all but apiVersion/kind/metadata),
/// appending the path of each to `pruned`.
pub fn prune(schema: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    let root = path.is_empty();
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let extra = schema["additionalProperties"]
                .as_object()
                .map(|e| Value::Object(e.clone()));
            let keep_unknown = preserves_unknown(schema) || extra.is_some();
            let mut drop = Vec::new();
            for (k, child) in m.iter_mut() {
                if root && ROOT_KEYS.contains(&k.as_str()) {
                    continue;
                }
                let p = child_path(path, k);
                match (props.and_then(|p| p.get(k)), &extra) {
                    (Some(s), _) => prune(s, child, &p, pruned),
                    (None, Some(e)) => prune(e, child, &p, pruned),
                    (None, None) if keep_unknown => {}
                    (None, None) => drop.push((k.clone(), p)),
                }
            }
            for (k, p) in drop {
                m.remove(&k);
                pruned.push(p);
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(&schema["items"], item, &format!("{path}[{i}]"), pruned);
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn invalid(path: &str, value: &str, why: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {value}: {path} in body {why}"),
        field: path.to_string(),
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Validates `v` at `path` against `schema`, appending a cause per failing field.
pub fn validate(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() && (schema["nullable"] == Value::Bool(true) || schema.get("type").is_none()) {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    let actual = type_name(v);
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            causes.push(invalid(
                path,
                &format!("{actual:?}"),
                format!("must be of type integer-or-string: {actual:?}"),
            ));
            return;
        }
    } else if let Some(want) = schema["type"].as_str() {
        let ok = want == actual || (want == "number" && actual == "integer");
        if !ok {
            causes.push(invalid(
                path,
                &format!("{actual:?}"),
                format!("must be of type {want}: {actual:?}"),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(shown).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    shown(v),
                    list.join(", ")
                ),
                field: path.to_string(),
            });
        }
    }
    match v {
        Value::String(s) => check_string(schema, s, path, causes),
        Value::Number(_) => check_number(schema, v, path, causes),
        Value::Array(items) => check_array(schema, items, path, causes),
        Value::Object(m) => check_object(schema, m, path, causes),
        _ => {}
    }
}

fn check_string(schema: &Value, s: &str, path: &str, causes: &mut Vec<Cause>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64() {
        if len > max {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than {max} bytes"),
                field: path.to_string(),
            });
        }
    }
    if let Some(min) = schema["minLength"].as_u64() {
        if len < min {
            causes.push(invalid(
                path,
                &format!("{s:?}"),
                format!("should be at least {min} chars long"),
            ));
        }
    }
    if let Some(p) = schema["pattern"].as_str() {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => {
                causes.push(invalid(
                    path,
                    &format!("{s:?}"),
                    format!("should match '{p}'"),
                ));
            }
            Ok(_) => {}
            Err(_) => causes.push(invalid(
                path,
                &format!("{s:?}"),
                format!("cannot be checked: the schema's pattern '{p}' does not compile"),
            )),
        }
    }
}

fn check_number(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(x) = v.as_f64() else { return };
    let shown = v.to_string();
    if let Some(min) = schema["minimum"].as_f64() {
        let exclusive = schema["exclusiveMinimum"] == Value::Bool(true);
        if x < min || (exclusive && x == min) {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(invalid(
                path,
                &shown,
                format!("should be {op} {}", schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        let exclusive = schema["exclusiveMaximum"] == Value::Bool(true);
        if x > max || (exclusive && x == max) {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(invalid(
                path,
                &shown,
                format!("should be {op} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(m) = schema["multipleOf"].as_f64().filter(|m| *m > 0.0) {
        if (x / m).fract() != 0.0 {
            causes.push(invalid(
                path,
                &shown,
                format!("should be a multiple of {}", schema["multipleOf"]),
            ));
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(max) = schema["maxItems"].as_u64() {
        if n > max {
            causes.push(Cause {
                reason: "FieldValueTooMany",
                message: format!("Too many: {n}: must have at most {max} items"),
                field: path.to_string(),
            });
        }
    }
    if let Some(min) = schema["minItems"].as_u64() {
        if n < min {
            causes.push(invalid(
                path,
                &n.to_string(),
                format!("should have at least {min} items"),
            ));
        }
    }
    match schema["x-kubernetes-list-type"].as_str() {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    causes.push(duplicate(&format!("{path}[{i}]"), shown(item)));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let key_of =
                |item: &Value| -> Vec<Value> { keys.iter().map(|k| item[*k].clone()).collect() };
            for (i, item) in items.iter().enumerate() {
                let k = key_of(item);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    let shown: Vec<String> = keys
                        .iter()
                        .zip(&k)
                        .map(|(name, v)| format!("\"{name}\":{v}"))
                        .collect();
                    causes.push(duplicate(
                        &format!("{path}[{i}]"),
                        format!("map[{}]", shown.join(" ")),
                    ));
                }
            }
        }
        _ => {}
    }
    if schema["items"].is_object() {
        for (i, item) in items.iter().enumerate() {
            validate(&schema["items"], item, &format!("{path}[{i}]"), causes);
        }
    }
}

fn duplicate(path: &str, value: String) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        message: format!("Duplicate value: {value}"),
        field: path.to_string(),
    }
}

fn check_object(schema: &Value, m: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    let root = path.is_empty();
    for req in schema["required"].as_array().into_iter().flatten() {
        if let Some(k) = req.as_str() {
            if m.get(k).is_none_or(|v| {
                v.is_null() && schema["properties"][k]["nullable"] != Value::Bool(true)
            }) {
                causes.push(Cause::required(child_path(path, k)));
            }
        }
    }
    let props = schema["properties"].as_object();
    for (k, child) in m {
        if root && ROOT_KEYS.contains(&k.as_str()) {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)) {
            validate(s, child, &child_path(path, k), causes);
        } else if schema["additionalProperties"].is_object() {
            validate(
                &schema["additionalProperties"],
                child,
                &child_path(path, k),
                causes,
            );
        }
    }
}

/// What [`admit`] did to an object.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Paths of the unknown fields it removed.
    pub pruned: Vec<String>,
    /// Why the object is invalid (empty: valid).
    pub causes: Vec<Cause>,
}

/// Defaults, prunes and validates a custom resource `obj` against its version's schema.
pub fn admit(schema: &Value, obj: &mut Value) -> Admitted {
    apply_defaults(schema, obj);
    let mut out = Admitted::default();
    prune(schema, obj, "", &mut out.pruned);
    validate(schema, obj, "", &mut out.causes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The book's Website schema, with some constraints added.
    fn website() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["gitRepo"], "properties": {
                "gitRepo": {"type": "string", "pattern": "^https?://"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                "tier": {"type": "string", "enum": ["web", "api"]},
                "name": {"type": "string", "maxLength": 8},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "maxItems": 3, "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "routes": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["path"],
                    "items": {"type": "object", "properties": {"path": {"type": "string"}, "to": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "note": {"type": "string", "nullable": true}
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }})
    }

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_and_pruning() {
        let mut o = json!({"apiVersion": "extensions.example.com/v1", "kind": "Website",
            "metadata": {"name": "kubia"},
            "spec": {"gitRepo": "https://github.com/luksa/kubia-website-example.git", "unknown": 1,
                "extra": {"anything": {"goes": true}}, "labels": {"a": "b"}, "note": null},
            "junk": true});
        let done = admit(&website(), &mut o);
        assert!(done.causes.is_empty(), "{:?}", messages(&done.causes));
        assert_eq!(
            done.pruned,
            vec!["spec.unknown".to_string(), "junk".to_string()]
        );
        assert_eq!(o["spec"]["replicas"], 1, "default applied");
        assert!(o["spec"].get("unknown").is_none(), "unknown field pruned");
        assert!(o.get("junk").is_none(), "unknown root field pruned");
        assert_eq!(o["spec"]["extra"]["anything"]["goes"], true, "preserved");
        assert_eq!(o["metadata"]["name"], "kubia", "metadata untouched");
        assert_eq!(o["spec"]["labels"]["a"], "b");
    }

    #[test]
    fn causes_name_each_field_as_upstream() {
        let mut o = json!({"spec": {"replicas": "three", "tier": "db", "name": "much-too-long",
            "gitRepo": "ftp://x", "port": true, "tags": ["a", "a", "b", "c"],
            "routes": [{"path": "/"}, {"path": "/"}], "labels": {"n": 1}}});
        let got = messages(&admit(&website(), &mut o).causes);
        let want = [
            "spec.gitRepo: Invalid value: \"ftp://x\": spec.gitRepo in body should match '^https?://'",
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            "spec.tier: Unsupported value: \"db\": supported values: \"web\", \"api\"",
            "spec.name: Too long: may not be more than 8 bytes",
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer-or-string: \"boolean\"",
            "spec.tags: Too many: 4: must have at most 3 items",
            "spec.tags[1]: Duplicate value: \"a\"",
            "spec.routes[1]: Duplicate value: map[\"path\":\"/\"]",
            "spec.labels.n: Invalid value: \"integer\": spec.labels.n in body must be of type string: \"integer\"",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w}\ngot {got:#?}");
        }
        let mut missing = json!({"spec": {"replicas": 9}});
        let got = messages(&admit(&website(), &mut missing).causes);
        assert!(
            got.contains(&"spec.gitRepo: Required value".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(&"spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5".to_string()),
            "{got:?}"
        );
        let mut wrong_root = json!({"spec": "text"});
        let got = messages(&admit(&website(), &mut wrong_root).causes);
        assert_eq!(
            got,
            vec![
                "spec: Invalid value: \"string\": spec in body must be of type object: \"string\""
                    .to_string()
            ]
        );
    }
}
