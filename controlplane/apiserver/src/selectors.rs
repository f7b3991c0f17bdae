//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and field selectors.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parse error in a selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// The selector text could not be parsed.
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    /// The field is not supported for this resource.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Eq(String, String),
    /// `key!=value`.
    NotEq(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Parse(whole.to_string()))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let err = || SelectorError::Parse(part.to_string());
            let req = if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set_values(v, part)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set_values(v, part)?)
            } else {
                Requirement::Exists(part.to_string())
            };
            let key = match &req {
                Requirement::Eq(k, _)
                | Requirement::NotEq(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(err());
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Builds a selector from a `matchLabels`/`matchExpressions` object.
    pub fn from_api(sel: &Value) -> Self {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement::Eq(k.clone(), v.as_str().unwrap_or("").into()));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or("").to_string();
            let vals: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            reqs.push(match e["operator"].as_str().unwrap_or("") {
                "In" => Requirement::In(key, vals),
                "NotIn" => Requirement::NotIn(key, vals),
                "Exists" => Requirement::Exists(key),
                _ => Requirement::NotExists(key),
            });
        }
        Self(reqs)
    }

    /// Builds a selector from either a `LabelSelector` object or a plain label map
    /// (ReplicationController and Service selectors).
    pub fn from_any(sel: &Value) -> Self {
        if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() {
            return Self::from_api(sel);
        }
        Self(
            sel.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| Requirement::Eq(k.clone(), v.as_str().unwrap_or("").into()))
                .collect(),
        )
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// Renders the selector in query syntax (used in Scale status and tables).
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Requirement::Eq(k, v) => format!("{k}={v}"),
                Requirement::NotEq(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Labels of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// The fields a selector may use for `kind`.
fn field_value(kind: &str, obj: &Value, field: &str) -> Option<Option<String>> {
    let s = |v: &Value| Some(v.as_str().unwrap_or("").to_string());
    match field {
        "metadata.name" => Some(s(&obj["metadata"]["name"])),
        "metadata.namespace" => Some(s(&obj["metadata"]["namespace"])),
        "spec.nodeName" if kind == "Pod" => Some(s(&obj["spec"]["nodeName"])),
        "status.phase"
            if matches!(
                kind,
                "Pod" | "Namespace" | "PersistentVolume" | "PersistentVolumeClaim"
            ) =>
        {
            Some(s(&obj["status"]["phase"]))
        }
        "spec.restartPolicy" | "spec.schedulerName" | "spec.serviceAccountName"
            if kind == "Pod" =>
        {
            let f = field.trim_start_matches("spec.");
            Some(s(&obj["spec"][f]))
        }
        "status.podIP" if kind == "Pod" => Some(s(&obj["status"]["podIP"])),
        "spec.unschedulable" if kind == "Node" => Some(Some(
            obj["spec"]["unschedulable"]
                .as_bool()
                .unwrap_or(false)
                .to_string(),
        )),
        "type" if kind == "Secret" => Some(s(&obj["type"])),
        "involvedObject.kind"
        | "involvedObject.name"
        | "involvedObject.namespace"
        | "involvedObject.uid"
        | "reason"
        | "type"
        | "source"
            if kind == "Event" =>
        {
            let mut v = obj;
            for p in field.split('.') {
                v = &v[p];
            }
            Some(s(v))
        }
        _ => None,
    }
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value, checking fields against `kind`.
    pub fn parse(s: &str, kind: &str) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (f, eq, v) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Parse(part.to_string()));
            };
            let f = f.trim();
            if field_value(kind, &Value::Null, f).is_none() {
                return Err(SelectorError::UnsupportedField(f.to_string()));
            }
            out.push((f.to_string(), eq, v.trim().to_string()));
        }
        Ok(Self(out))
    }

    /// Whether `obj` of `kind` satisfies every term.
    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.0.iter().all(|(f, eq, v)| {
            let actual = field_value(kind, obj, f).flatten().unwrap_or_default();
            (actual == *v) == *eq
        })
    }

    /// The exact `metadata.name` this selector pins, if any.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_ops() {
        let labels = l(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing,app=web", true),
            ("env notin (prod)", true),
            ("app in (db),tier", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&labels),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn fields() {
        let pod = json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse(
            "metadata.name=a,spec.nodeName!=n2,status.phase=Running",
            "Pod",
        )
        .unwrap();
        assert!(f.matches("Pod", &pod));
        assert_eq!(f.name(), Some("a"));
        assert!(!FieldSelector::parse("spec.nodeName=", "Pod")
            .unwrap()
            .matches("Pod", &pod));
        assert!(FieldSelector::parse("spec.foo=1", "Pod").is_err());
        assert!(FieldSelector::parse("spec.nodeName=x", "Service").is_err());
    }

    #[test]
    fn from_api_renders() {
        let s = LabelSelector::from_api(
            &json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}),
        );
        assert_eq!(s.render(), "app=web,tier in (a,b)");
    }
}
