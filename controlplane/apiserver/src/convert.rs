//! Resources that share storage with another version: `events.k8s.io/v1` Events are stored as
//! `core/v1` Events (as upstream does), so `kubectl get events` sees what kube-runtime's event
//! recorder writes and the reverse.

use serde_json::{Map, Value};

use super::registry::ResourceDef;

/// `(events.k8s.io/v1 name, core/v1 name)` of the fields that differ.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, from_events: bool, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let key = EVENT_FIELDS
            .iter()
            .find_map(|(ev, core)| match from_events {
                true if k == ev => Some(*core),
                false if k == core => Some(*ev),
                _ => None,
            })
            .unwrap_or(k.as_str());
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    Value::Object(out)
}

/// Whether `def` is stored under another resource's keys.
pub fn shares_storage(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io"
}

/// Converts an object of `def` to its stored form.
pub fn to_storage(def: &ResourceDef, obj: &Value) -> Value {
    if shares_storage(def) {
        rename(obj, true, "v1")
    } else {
        obj.clone()
    }
}

/// Converts a stored object to the form `def` serves.
pub fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if shares_storage(def) {
        rename(&obj, false, &def.api_version())
    } else {
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_roundtrip() {
        let def = crate::registry::find("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {"name": "p"}, "note": "hi", "reason": "Started"});
        let core = to_storage(def, &ev);
        assert_eq!(
            core,
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "p"}, "message": "hi", "reason": "Started"})
        );
        assert_eq!(from_storage(def, core), ev);
    }
}
