//! The deletion conditions of a Terminating namespace, with upstream's types, reasons and
//! messages (`pkg/controller/namespace/deletion/status_condition_utils.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The condition types, in upstream's order, with their "all is well" reason and message.
const TYPES: [(&str, &str, &str); 5] = [
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// What one pass over a namespace's content found.
#[derive(Debug, Default)]
pub struct Report {
    /// Discovery failed (its message).
    pub discovery: Option<String>,
    /// Deleting some resources failed (their messages).
    pub content_errors: Vec<String>,
    /// Objects left per `resource.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Objects left per finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

/// Go's aggregate error text: one message alone, several in brackets.
pub fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

impl Report {
    /// The failing conditions (type, reason, message).
    fn failing(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = &self.discovery {
            out.push((
                "NamespaceDeletionDiscoveryFailure",
                "DiscoveryFailed",
                m.clone(),
            ));
        }
        if !self.content_errors.is_empty() {
            out.push((
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    self.content_errors.len(),
                    aggregate(&self.content_errors)
                ),
            ));
        }
        let left: Vec<String> = self
            .remaining
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        if !left.is_empty() {
            out.push((
                "NamespaceContentRemaining",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", left.join(", ")),
            ));
        }
        let fins: Vec<String> = self
            .finalizers
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        if !fins.is_empty() {
            out.push((
                "NamespaceFinalizersRemaining",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    fins.join(", ")
                ),
            ));
        }
        out
    }

    /// Updates `conditions` in place; whether anything changed.
    pub fn apply(&self, conditions: &mut Vec<NamespaceCondition>, now: Time) -> bool {
        let failing = self.failing();
        let mut changed = false;
        for (t, ok_reason, ok_message) in TYPES {
            let (status, reason, message) = match failing.iter().find(|f| f.0 == t) {
                Some((_, r, m)) => ("True", *r, m.clone()),
                None => ("False", ok_reason, ok_message.to_string()),
            };
            match conditions.iter_mut().find(|c| c.type_ == t) {
                None => {
                    conditions.push(NamespaceCondition {
                        type_: t.into(),
                        status: status.into(),
                        reason: Some(reason.into()),
                        message: Some(message),
                        last_transition_time: Some(now.clone()),
                    });
                    changed = true;
                }
                Some(c) => {
                    if c.status != status
                        || c.reason.as_deref() != Some(reason)
                        || c.message.as_deref() != Some(message.as_str())
                    {
                        if c.status != status {
                            c.last_transition_time = Some(now.clone());
                        }
                        c.status = status.into();
                        c.reason = Some(reason.into());
                        c.message = Some(message);
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn all_clear_sets_the_ok_variants_once() {
        let mut c = Vec::new();
        assert!(Report::default().apply(&mut c, now()));
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(|c| c.status == "False"));
        assert_eq!(
            c[3].message.as_deref(),
            Some("All content successfully removed")
        );
        assert!(!Report::default().apply(&mut c, now()));
    }

    #[test]
    fn remaining_content_and_finalizers_have_upstreams_messages() {
        let mut r = Report::default();
        r.remaining.insert("pods.".into(), 2);
        r.remaining.insert("configmaps.".into(), 1);
        r.finalizers.insert("example.com/hold".into(), 1);
        let mut c = Vec::new();
        r.apply(&mut c, now());
        let get = |t: &str| c.iter().find(|c| c.type_ == t).unwrap().clone();
        let rem = get("NamespaceContentRemaining");
        assert_eq!(rem.status, "True");
        assert_eq!(rem.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            rem.message.as_deref(),
            Some("Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances")
        );
        let fin = get("NamespaceFinalizersRemaining");
        assert_eq!(
            fin.message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
        );
    }

    #[test]
    fn content_errors_aggregate() {
        let r = Report {
            content_errors: vec!["a".into(), "b".into()],
            ..Report::default()
        };
        let mut c = Vec::new();
        r.apply(&mut c, now());
        let f = c
            .iter()
            .find(|c| c.type_ == "NamespaceDeletionContentFailure")
            .unwrap();
        assert_eq!(
            f.message.as_deref(),
            Some("Failed to delete all resource types, 2 remaining: [a, b]")
        );
    }
}
