//! Strategic merge patch (the patch kind `kubectl apply`, `edit` and `patch` send by default):
//! a JSON merge patch where lists with a merge key (containers by `name`, ports by
//! `containerPort`/`port`, volumeMounts by `mountPath`, ...) merge element-wise, plus the
//! `$patch`, `$retainKeys`, `$setElementOrder/` and `$deleteFromPrimitiveList/` directives.

use serde_json::{Map, Value};

/// A malformed strategic merge patch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StrategicPatchError {
    /// An unknown `$patch` directive value.
    #[error("unknown patch directive {0:?}")]
    UnknownDirective(String),
    /// A directive whose value has the wrong type.
    #[error("invalid value for {0}")]
    BadDirective(String),
}

/// The merge key of list field `field`, given sample elements (ports differ between containers
/// and services).
fn merge_key(field: &str, samples: &[&Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "taints" => "key",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if samples.iter().any(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of primitives merged as sets.
fn primitive_merge(field: &str) -> bool {
    field == "finalizers"
}

/// Applies `patch` to `target` and returns the result.
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, StrategicPatchError> {
    let mut out = target.clone();
    merge_value(&mut out, patch)?;
    Ok(out)
}

fn merge_value(target: &mut Value, patch: &Value) -> Result<(), StrategicPatchError> {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if let Some(d) = p.get("$patch") {
        match d.as_str() {
            Some("replace") => {
                let mut m = p.clone();
                m.remove("$patch");
                *target = Value::Object(m);
                return Ok(());
            }
            Some("delete") => {
                *target = Value::Null;
                return Ok(());
            }
            Some("merge") => {}
            other => {
                return Err(StrategicPatchError::UnknownDirective(
                    other.unwrap_or("").to_string(),
                ))
            }
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    let mut orders = Vec::new();
    for (k, pv) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), pv.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let del = pv
                .as_array()
                .ok_or_else(|| StrategicPatchError::BadDirective(k.clone()))?;
            if let Some(list) = t.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), pv) {
            (Some(tv), Value::Object(_)) if tv.is_object() => {
                merge_value(tv, pv)?;
                if tv.is_null() {
                    t.remove(k);
                }
            }
            (Some(Value::Array(tl)), Value::Array(pl)) => merge_list(k, tl, pl)?,
            (None, Value::Array(pl)) => {
                let mut list = Vec::new();
                merge_list(k, &mut list, pl)?;
                t.insert(k.clone(), Value::Array(list));
            }
            (_, Value::Object(_)) => {
                let mut fresh = Value::Object(Map::new());
                merge_value(&mut fresh, pv)?;
                if !fresh.is_null() {
                    t.insert(k.clone(), fresh);
                }
            }
            _ => {
                t.insert(k.clone(), pv.clone());
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or_else(|| StrategicPatchError::BadDirective("$retainKeys".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (field, order) in orders {
        if let (Some(Value::Array(list)), Some(order)) = (t.get_mut(&field), order.as_array()) {
            reorder(&field, list, order);
        }
    }
    Ok(())
}

fn merge_list(
    field: &str,
    target: &mut Vec<Value>,
    patch: &[Value],
) -> Result<(), StrategicPatchError> {
    let samples: Vec<&Value> = target.iter().chain(patch.iter()).collect();
    let key = merge_key(field, &samples);
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    match key {
        Some(key) if patch.iter().all(Value::is_object) => {
            for pe in patch {
                let id = pe.get(key);
                let pos = id.and_then(|id| target.iter().position(|te| te.get(key) == Some(id)));
                let delete = pe.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        target.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge_value(&mut target[i], pe)?,
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        merge_value(&mut fresh, pe)?;
                        target.push(fresh);
                    }
                }
            }
        }
        _ if primitive_merge(field) => {
            for pe in patch {
                if !target.contains(pe) {
                    target.push(pe.clone());
                }
            }
        }
        _ => *target = patch.to_vec(),
    }
    Ok(())
}

fn reorder(field: &str, list: &mut [Value], order: &[Value]) {
    let samples: Vec<&Value> = list.iter().collect();
    let key = merge_key(field, &samples);
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        let id = ident(v);
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k) == Some(&id),
                None => *o == id,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}]}});
        let r = strategic_merge(&t, &p).unwrap();
        assert_eq!(
            r,
            json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}]}})
        );
    }

    #[test]
    fn delete_directive_and_null() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let p = json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let r = strategic_merge(&t, &p).unwrap();
        assert_eq!(
            r,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [{"name": "b"}]}})
        );
    }

    #[test]
    fn ports_use_container_port_and_order() {
        let t = json!({"ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]});
        let p = json!({"$setElementOrder/ports": [{"containerPort": 443}, {"containerPort": 80}], "ports": [{"containerPort": 80, "name": "web"}]});
        let r = strategic_merge(&t, &p).unwrap();
        assert_eq!(
            r,
            json!({"ports": [{"containerPort": 443}, {"containerPort": 80, "name": "web"}]})
        );
    }

    #[test]
    fn plain_lists_replace_and_retain_keys() {
        let t = json!({"args": ["a", "b"], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}});
        let p = json!({"args": ["c"], "strategy": {"$retainKeys": ["type"], "type": "Recreate"}});
        let r = strategic_merge(&t, &p).unwrap();
        assert_eq!(r, json!({"args": ["c"], "strategy": {"type": "Recreate"}}));
        let bad = strategic_merge(&t, &json!({"$patch": "bogus"}));
        assert!(bad.is_err());
    }

    #[test]
    fn delete_from_primitive_list() {
        let t = json!({"metadata": {"finalizers": ["a", "b"]}});
        let r = strategic_merge(&t, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}})).unwrap();
        assert_eq!(r, json!({"metadata": {"finalizers": ["b", "c"]}}));
    }
}
