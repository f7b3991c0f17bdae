//! Storage admission on create: `DefaultStorageClass` (a claim without `storageClassName` and
//! without the beta class annotation gets the default class: the newest StorageClass annotated
//! `storageclass.kubernetes.io/is-default-class: "true"`, ties by name; none leaves it unset)
//! and `StorageObjectInUseProtection` (claims get `kubernetes.io/pvc-protection`, volumes
//! `kubernetes.io/pv-protection`).

use serde_json::{json, Value};

/// Name of the default-class plugin (for `disable_admission_plugins`).
pub const DEFAULT_STORAGE_CLASS: &str = "DefaultStorageClass";
/// Name of the protection-finalizer plugin (for `disable_admission_plugins`).
pub const IN_USE_PROTECTION: &str = "StorageObjectInUseProtection";

const ANN_DEFAULT: &str = "storageclass.kubernetes.io/is-default-class";
const ANN_BETA_DEFAULT: &str = "storageclass.beta.kubernetes.io/is-default-class";
const ANN_BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The default class among `classes` (upstream's `GetDefaultClass`).
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    let mut marked: Vec<&Value> = classes
        .iter()
        .filter(|c| {
            let a = &c["metadata"]["annotations"];
            a[ANN_DEFAULT] == "true" || a[ANN_BETA_DEFAULT] == "true"
        })
        .collect();
    let ts = |c: &Value| {
        c["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    marked.sort_by(|a, b| {
        ts(b).cmp(&ts(a)).then_with(|| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        })
    });
    marked.first().copied()
}

/// `DefaultStorageClass` on a new claim.
pub fn default_claim_class(classes: &[Value], claim: &mut Value) {
    let has_class = !claim["spec"]["storageClassName"].is_null()
        || !claim["metadata"]["annotations"][ANN_BETA_CLASS].is_null();
    if has_class {
        return;
    }
    let Some(name) = default_class(classes).and_then(|c| c["metadata"]["name"].as_str()) else {
        return;
    };
    if !claim["spec"].is_object() {
        claim["spec"] = json!({});
    }
    claim["spec"]["storageClassName"] = json!(name);
}

/// `StorageObjectInUseProtection` on a new claim or volume: adds `finalizer` once.
pub fn protect(obj: &mut Value, finalizer: &str) {
    let meta = &mut obj["metadata"];
    if !meta["finalizers"].is_array() {
        meta["finalizers"] = json!([]);
    }
    let list = meta["finalizers"].as_array_mut().expect("array");
    if !list.iter().any(|f| f == finalizer) {
        list.push(json!(finalizer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(name: &str, ts: &str, default: bool) -> Value {
        let ann = if default {
            json!({ANN_DEFAULT: "true"})
        } else {
            json!({})
        };
        json!({"metadata": {"name": name, "creationTimestamp": ts, "annotations": ann}})
    }

    #[test]
    fn default_class_goes_to_claims_without_one() {
        let classes = vec![
            sc("old", "2025-01-01T00:00:00Z", true),
            sc("new", "2026-01-01T00:00:00Z", true),
            sc("b", "2026-01-01T00:00:00Z", true),
            sc("plain", "2027-01-01T00:00:00Z", false),
        ];
        let mut c = json!({"metadata": {"name": "c"}, "spec": {}});
        default_claim_class(&classes, &mut c);
        assert_eq!(c["spec"]["storageClassName"], "b", "newest, ties by name");
        let mut none = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": ""}});
        default_claim_class(&classes, &mut none);
        assert_eq!(
            none["spec"]["storageClassName"], "",
            "explicit no-class stays"
        );
        let mut beta =
            json!({"metadata": {"name": "c", "annotations": {ANN_BETA_CLASS: "x"}}, "spec": {}});
        default_claim_class(&classes, &mut beta);
        assert!(beta["spec"]["storageClassName"].is_null());
        let mut unset = json!({"metadata": {"name": "c"}, "spec": {}});
        default_claim_class(&classes[3..], &mut unset);
        assert!(
            unset["spec"]["storageClassName"].is_null(),
            "no default: unset"
        );
    }

    #[test]
    fn protection_finalizer_added_once() {
        let mut c = json!({"metadata": {"name": "c", "finalizers": ["x"]}});
        protect(&mut c, "kubernetes.io/pvc-protection");
        protect(&mut c, "kubernetes.io/pvc-protection");
        assert_eq!(
            c["metadata"]["finalizers"],
            json!(["x", "kubernetes.io/pvc-protection"])
        );
    }
}
