//! What a DELETE records for the garbage collector (upstream's `BeforeDelete` and
//! `deletionFinalizersForGarbageCollection`): the API server never cascades itself. Orphan adds
//! the `orphan` finalizer, Foreground the `foregroundDeletion` finalizer (both keep the object,
//! with its `deletionTimestamp`, until the controller manager's garbage collector has dealt with
//! the dependents); Background deletes the owner at once and the collector removes the dependents
//! whose owners are all gone.

use serde_json::Value;

use crate::registry::ResourceDef;
use crate::status::{ApiError, Cause};

/// The finalizer that holds an owner until its dependents lost their owner reference.
pub const ORPHAN: &str = "orphan";
/// The finalizer that holds an owner until its blocking dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";

/// A `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Keep dependents, remove their owner reference.
    Orphan,
    /// Delete the owner now, its dependents afterwards.
    Background,
    /// Delete the dependents first, then the owner.
    Foreground,
}

/// The propagation a DELETE asked for: `propagationPolicy` and the legacy `orphanDependents`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Propagation {
    /// `propagationPolicy`, when given.
    pub policy: Option<Policy>,
    /// `orphanDependents`, when given.
    pub orphan_dependents: Option<bool>,
}

fn invalid(cause: Cause) -> ApiError {
    ApiError::Invalid {
        kind: "DeleteOptions".into(),
        name: String::new(),
        causes: vec![cause],
    }
}

/// Reads `propagationPolicy` and `orphanDependents` (query or DeleteOptions body).
pub fn propagation(
    query_policy: Option<&str>,
    query_orphan: Option<&str>,
    body: &Value,
) -> Result<Propagation, ApiError> {
    let policy = query_policy
        .map(String::from)
        .or_else(|| body["propagationPolicy"].as_str().map(String::from));
    let policy = match policy.as_deref() {
        None => None,
        Some("Orphan") => Some(Policy::Orphan),
        Some("Background") => Some(Policy::Background),
        Some("Foreground") => Some(Policy::Foreground),
        Some(other) => {
            return Err(invalid(Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
                field: "propagationPolicy".into(),
            }))
        }
    };
    let orphan_dependents = match query_orphan {
        Some(v) => Some(v == "true"),
        None => body["orphanDependents"].as_bool(),
    };
    if let (Some(p), Some(_)) = (policy, orphan_dependents) {
        return Err(invalid(Cause::invalid(
            "propagationPolicy",
            &format!("{p:?}"),
            "orphanDependents and deletionPropagation cannot be both set",
        )));
    }
    Ok(Propagation {
        policy,
        orphan_dependents,
    })
}

/// Whether a DELETE without a policy orphans by default: upstream keeps the pre-GC behaviour
/// for `batch/v1` Jobs and `v1` ReplicationControllers (every other served version of every
/// other resource deletes dependents, in the background).
fn orphans_by_default(def: &ResourceDef) -> bool {
    matches!(
        (def.group, def.version, def.kind),
        ("batch", "v1", "Job") | ("", "v1", "ReplicationController")
    )
}

fn finalizers_of(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

fn should_orphan(def: &ResourceDef, finalizers: &[String], p: &Propagation) -> bool {
    if let Some(o) = p.orphan_dependents {
        return o;
    }
    match p.policy {
        Some(Policy::Orphan) => return true,
        Some(Policy::Background | Policy::Foreground) => return false,
        None => {}
    }
    for f in finalizers {
        match f.as_str() {
            ORPHAN => return true,
            FOREGROUND => return false,
            _ => {}
        }
    }
    orphans_by_default(def)
}

fn should_delete_dependents(finalizers: &[String], p: &Propagation) -> bool {
    if p.orphan_dependents.is_some() {
        return false;
    }
    match p.policy {
        Some(Policy::Foreground) => return true,
        Some(Policy::Background | Policy::Orphan) => return false,
        None => {}
    }
    for f in finalizers {
        match f.as_str() {
            FOREGROUND => return true,
            ORPHAN => return false,
            _ => {}
        }
    }
    false
}

/// The finalizers `obj` (of `def`) carries once deleted with `p`, and whether they differ from
/// the ones it has now.
pub fn deletion_finalizers(def: &ResourceDef, obj: &Value, p: &Propagation) -> (bool, Vec<String>) {
    let current = finalizers_of(obj);
    let orphan = should_orphan(def, &current, p);
    let foreground = should_delete_dependents(&current, p);
    let mut out: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN.into());
    }
    if foreground {
        out.push(FOREGROUND.into());
    }
    let mut a = current.clone();
    let mut b = out.clone();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    if a == b {
        (false, current)
    } else {
        (true, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        crate::registry::all()
            .into_iter()
            .find(|d| d.group == group && d.plural == plural)
            .expect("registered")
    }

    fn p(policy: Option<Policy>, orphan: Option<bool>) -> Propagation {
        Propagation {
            policy,
            orphan_dependents: orphan,
        }
    }

    #[test]
    fn policies_add_their_finalizer() {
        let rs = def("apps", "replicasets");
        let obj = json!({"metadata": {"finalizers": ["example.com/x"]}});
        assert_eq!(
            deletion_finalizers(rs, &obj, &p(Some(Policy::Orphan), None)),
            (true, vec!["example.com/x".into(), ORPHAN.into()])
        );
        assert_eq!(
            deletion_finalizers(rs, &obj, &p(Some(Policy::Foreground), None)),
            (true, vec!["example.com/x".into(), FOREGROUND.into()])
        );
        assert_eq!(
            deletion_finalizers(rs, &obj, &p(Some(Policy::Background), None)),
            (false, vec!["example.com/x".into()])
        );
        assert_eq!(
            deletion_finalizers(rs, &json!({}), &p(None, None)),
            (false, vec![])
        );
        assert_eq!(
            deletion_finalizers(rs, &json!({}), &p(None, Some(true))),
            (true, vec![ORPHAN.into()])
        );
    }

    #[test]
    fn a_new_policy_replaces_the_old_finalizer() {
        let rs = def("apps", "replicasets");
        let obj = json!({"metadata": {"finalizers": [FOREGROUND]}});
        assert_eq!(
            deletion_finalizers(rs, &obj, &p(Some(Policy::Orphan), None)),
            (true, vec![ORPHAN.into()])
        );
        assert_eq!(
            deletion_finalizers(rs, &obj, &p(Some(Policy::Background), None)),
            (true, vec![])
        );
        // No policy: the finalizer already there decides.
        assert_eq!(
            deletion_finalizers(rs, &obj, &p(None, None)),
            (false, vec![FOREGROUND.into()])
        );
    }

    #[test]
    fn legacy_kinds_orphan_by_default() {
        let none = p(None, None);
        for (g, r) in [("batch", "jobs"), ("", "replicationcontrollers")] {
            assert_eq!(
                deletion_finalizers(def(g, r), &json!({}), &none),
                (true, vec![ORPHAN.into()]),
                "{r}"
            );
        }
        assert_eq!(
            deletion_finalizers(def("", "pods"), &json!({}), &none),
            (false, vec![])
        );
    }

    #[test]
    fn parses_options() {
        assert_eq!(
            propagation(Some("Foreground"), None, &json!({})).unwrap(),
            p(Some(Policy::Foreground), None)
        );
        assert_eq!(
            propagation(None, None, &json!({"propagationPolicy": "Orphan"})).unwrap(),
            p(Some(Policy::Orphan), None)
        );
        assert_eq!(
            propagation(None, None, &json!({"orphanDependents": false})).unwrap(),
            p(None, Some(false))
        );
        assert!(propagation(Some("Sideways"), None, &json!({})).is_err());
        assert!(propagation(Some("Orphan"), Some("true"), &json!({})).is_err());
    }
}
