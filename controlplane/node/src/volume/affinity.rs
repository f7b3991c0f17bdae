//! A PersistentVolume's `nodeAffinity` against this node (upstream's `CheckNodeAffinity`):
//! the required terms are ORed, the expressions of a term ANDed; `matchFields` knows
//! `metadata.name`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume};

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) =
                (value.and_then(int), values.first().and_then(|s| int(s)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

fn term(t: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        // An empty term matches nothing.
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = (r.key == "metadata.name").then_some(name);
            requirement(r, v)
        })
}

/// Whether the PV may be used on the node `name` with `labels` (a PV without required node
/// affinity may be used anywhere).
pub fn matches(pv: &PersistentVolume, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|t| term(t, name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(affinity: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"nodeAffinity": affinity}}),
        )
        .unwrap()
    }

    #[test]
    fn terms_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname".to_string(), "n1".to_string()),
            ("rank".to_string(), "5".to_string()),
        ]
        .into();
        let host = |v: &str| {
            pv(
                json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [v]}]}]}}),
            )
        };
        assert!(matches(&host("n1"), "n1", &labels));
        assert!(!matches(&host("n2"), "n1", &labels));
        let none: PersistentVolume =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {}})).unwrap();
        assert!(matches(&none, "n1", &labels));
        // ORed terms, ANDed expressions, numeric and field operators.
        let p = pv(json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["7"]}]},
            {"matchExpressions": [{"key": "rank", "operator": "Lt", "values": ["7"]},
                                  {"key": "zone", "operator": "DoesNotExist"}]}]}}));
        assert!(matches(&p, "n1", &labels));
        let p = pv(json!({"required": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]}}));
        assert!(!matches(&p, "n1", &labels));
        assert!(matches(&p, "n2", &labels));
        let empty = pv(json!({"required": {"nodeSelectorTerms": [{}]}}));
        assert!(!matches(&empty, "n1", &labels));
    }
}
