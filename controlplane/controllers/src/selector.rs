//! Label selectors as controllers evaluate them (`matchLabels` and `matchExpressions`), and the
//! map selectors of ReplicationControllers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector evaluated against label sets; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    exprs: Vec<(String, String, Vec<String>)>,
}

impl Selector {
    /// From an `apps/v1` label selector.
    pub fn from_label_selector(sel: &LabelSelector) -> Self {
        Self {
            labels: sel.match_labels.clone().unwrap_or_default(),
            exprs: sel
                .match_expressions
                .iter()
                .flatten()
                .map(|e| {
                    (
                        e.key.clone(),
                        e.operator.clone(),
                        e.values.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    /// From a ReplicationController's map selector.
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        Self {
            labels: map.clone(),
            exprs: Vec::new(),
        }
    }

    /// Whether nothing is required (an empty selector).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op, vals)| {
                let have = labels.get(k);
                match op.as_str() {
                    "In" => have.is_some_and(|h| vals.contains(h)),
                    "NotIn" => have.is_none_or(|h| !vals.contains(h)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
    }

    /// The selector as a `labelSelector` query string.
    pub fn to_query(&self) -> String {
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (k, op, vals) in &self.exprs {
            parts.push(match op.as_str() {
                "In" => format!("{k} in ({})", vals.join(",")),
                "NotIn" => format!("{k} notin ({})", vals.join(",")),
                "Exists" => k.clone(),
                _ => format!("!{k}"),
            });
        }
        parts.join(",")
    }
}

/// Labels of an object, or none.
pub fn labels_of(l: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    l.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_table() {
        let sel = Selector::from_label_selector(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        });
        let cases = [
            (labels(&[("app", "web"), ("tier", "a")]), true),
            (labels(&[("app", "web"), ("tier", "c")]), false),
            (labels(&[("app", "web")]), false),
            (
                labels(&[("app", "web"), ("tier", "b"), ("canary", "1")]),
                false,
            ),
            (labels(&[("app", "db"), ("tier", "a")]), false),
        ];
        for (l, want) in cases {
            assert_eq!(sel.matches(&l), want, "{l:?}");
        }
        assert_eq!(sel.to_query(), "app=web,tier in (a,b),!canary");
        assert!(Selector::default().matches(&labels(&[("x", "y")])));
    }
}
