//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): a CRD's served versions become
//! resources like the built-in ones (same handlers, storage under `/registry/<group>/<plural>/`,
//! discovery with short names and categories, watch), each write of a custom resource goes
//! through its version's structural schema ([`schema`]: defaults, pruning, validation with 422
//! causes), `kubectl get` shows its `additionalPrinterColumns` ([`columns`]), and the `status`
//! subresource is served when the CRD asks for it. A CRD is checked as upstream does before it is
//! stored, gets `NamesAccepted`/`Established` conditions, and deleting it deletes its objects.
//!
//! The served set is process-wide (the API server registers a CRD when it is written and every
//! stored CRD at start), so one process serves one cluster's CRDs. Served definitions are
//! `'static` like the built-in table: each distinct definition is leaked once and reused when a
//! CRD is written again unchanged. Not done: conversion webhooks (versions share one storage
//! form and only `apiVersion` changes), the `scale` subresource, CEL `x-kubernetes-validations`,
//! OpenAPI publication of the schemas.

pub mod columns;
pub mod schema;

use std::sync::{Arc, Mutex, RwLock};

use serde_json::{json, Value};

use crate::registry::ResourceDef;
use crate::status::Cause;

/// The kind of the definitions themselves.
pub const CRD_KIND: &str = "CustomResourceDefinition";

/// One served version of a custom resource.
#[derive(Debug)]
pub struct Served {
    /// The resource, as the handlers see it.
    pub def: &'static ResourceDef,
    /// The CRD's name (`<plural>.<group>`).
    pub crd: String,
    /// The version's `openAPIV3Schema`.
    pub schema: Option<Value>,
    /// The version's `additionalPrinterColumns`.
    pub columns: Vec<columns::Column>,
}

static SERVED: RwLock<Vec<Arc<Served>>> = RwLock::new(Vec::new());
static LEAKED: Mutex<Vec<&'static ResourceDef>> = Mutex::new(Vec::new());

fn served_list() -> Vec<Arc<Served>> {
    SERVED.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The served custom resource `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    served_list()
        .iter()
        .map(|s| s.def)
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// The served custom resource of `kind` in `api_version`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    served_list()
        .iter()
        .map(|s| s.def)
        .find(|d| d.api_version() == api_version && d.kind == kind)
}

/// Every served custom resource version.
pub fn defs() -> Vec<&'static ResourceDef> {
    served_list().iter().map(|s| s.def).collect()
}

/// What is served for `def`, when it is a custom resource.
pub fn served(def: &ResourceDef) -> Option<Arc<Served>> {
    served_list().into_iter().find(|s| {
        s.def.group == def.group && s.def.version == def.version && s.def.plural == def.plural
    })
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: &Value) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak_str)
        .collect();
    Box::leak(items.into_boxed_slice())
}

/// A `'static` definition equal to the one described, leaked only the first time.
fn intern(
    group: &str,
    version: &str,
    names: &Value,
    namespaced: bool,
    status: bool,
) -> &'static ResourceDef {
    let mut leaked = LEAKED.lock().unwrap_or_else(|p| p.into_inner());
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let subs: &[&str] = if status { &["status"] } else { &[] };
    let same = |d: &&&'static ResourceDef| {
        d.group == group
            && d.version == version
            && d.plural == names["plural"].as_str().unwrap_or("")
            && d.singular == names["singular"].as_str().unwrap_or("")
            && d.kind == names["kind"].as_str().unwrap_or("")
            && d.namespaced == namespaced
            && d.short_names
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                == strs(&names["shortNames"])
            && d.categories
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                == strs(&names["categories"])
            && d.subresources == subs
    };
    if let Some(d) = leaked.iter().find(same) {
        return d;
    }
    let def: &'static ResourceDef = Box::leak(Box::new(ResourceDef {
        group: leak_str(group),
        version: leak_str(version),
        plural: leak_str(names["plural"].as_str().unwrap_or("")),
        singular: leak_str(names["singular"].as_str().unwrap_or("")),
        kind: leak_str(names["kind"].as_str().unwrap_or("")),
        namespaced,
        short_names: leak_list(&names["shortNames"]),
        categories: leak_list(&names["categories"]),
        subresources: if status { &["status"] } else { &[] },
    }));
    leaked.push(def);
    def
}

/// Serves `crd`'s served versions (replacing what it served before).
pub fn register(crd: &Value) {
    let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let namespaced = spec["scope"] != "Cluster";
    let mut names = spec["names"].clone();
    if names["singular"].as_str().unwrap_or("").is_empty() {
        names["singular"] = json!(names["kind"].as_str().unwrap_or("").to_lowercase());
    }
    let mut fresh = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != Value::Bool(true) {
            continue;
        }
        let version = v["name"].as_str().unwrap_or("");
        let status = v["subresources"]["status"].is_object();
        fresh.push(Arc::new(Served {
            def: intern(group, version, &names, namespaced, status),
            crd: name.clone(),
            schema: v["schema"]["openAPIV3Schema"]
                .as_object()
                .map(|s| Value::Object(s.clone())),
            columns: columns::from_crd_version(v),
        }));
    }
    let mut all = SERVED.write().unwrap_or_else(|p| p.into_inner());
    all.retain(|s| s.crd != name);
    all.extend(fresh);
    tracing::info!(crd = %name, "serving custom resource");
}

/// Stops serving CRD `name`'s resources.
pub fn unregister(name: &str) {
    SERVED
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| s.crd != name);
}

/// Upstream's CRD defaults: `singular` (the lower-case kind), `listKind`, conversion `None`.
pub fn apply_defaults(crd: &mut Value) {
    let names = &mut crd["spec"]["names"];
    if names.is_object() {
        let kind = names["kind"].as_str().unwrap_or("").to_string();
        if names["singular"].as_str().unwrap_or("").is_empty() {
            names["singular"] = json!(kind.to_lowercase());
        }
        if names["listKind"].as_str().unwrap_or("").is_empty() && !kind.is_empty() {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
    if crd["spec"].is_object() && crd["spec"]["conversion"].is_null() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
}

/// The status the server gives `crd`: names accepted, established, the storage version recorded
/// in `storedVersions` (after those of `old`).
pub fn status(crd: &Value, old: Option<&Value>) -> Value {
    let now = crate::defaults::now_rfc3339();
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
        if v["storage"] == Value::Bool(true) && !stored.contains(&v["name"]) {
            stored.push(v["name"].clone());
        }
    }
    let since = |ty: &str| {
        old.and_then(|o| o["status"]["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(now))
    };
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
        ],
        "acceptedNames": crd["spec"]["names"].clone(),
        "storedVersions": stored,
    })
}

fn is_dns_label(s: &str) -> bool {
    crate::validate::is_dns1123_label(s)
}

/// Upstream's CRD validation (the parts a user meets): name, group, names, scope, versions,
/// schemas; `old` is the stored CRD on update (scope and group are immutable).
pub fn check(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    } else if !is_dns_label(plural) {
        causes.push(Cause::invalid(
            "spec.names.plural",
            plural,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    for field in ["kind", "listKind"] {
        if spec["names"][field].as_str().unwrap_or("").is_empty() {
            causes.push(Cause::required(format!("spec.names.{field}")));
        }
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => causes.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ),
            field: "spec.scope".into(),
        }),
        None => causes.push(Cause::required("spec.scope")),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    }
    let storage = versions
        .iter()
        .filter(|v| v["storage"] == Value::Bool(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            &storage.to_string(),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let vname = v["name"].as_str().unwrap_or("");
        if !is_dns_label(vname) {
            causes.push(Cause::invalid(
                format!("spec.versions[{i}].name"),
                vname,
                "a DNS-1035 label",
            ));
        }
        if versions[..i].iter().any(|o| o["name"] == v["name"]) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {vname:?}"),
                field: format!("spec.versions[{i}].name"),
            });
        }
        if !v["schema"]["openAPIV3Schema"].is_object() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: schemas are required".into(),
                field: format!("spec.versions[{i}].schema.openAPIV3Schema"),
            });
        } else if v["schema"]["openAPIV3Schema"]["type"] != "object" {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: must be object at the root".into(),
                field: format!("spec.versions[{i}].schema.openAPIV3Schema.type"),
            });
        }
    }
    if let Some(old) = old {
        for field in ["scope", "group"] {
            if old["spec"][field] != spec[field] {
                causes.push(Cause::invalid(
                    format!("spec.{field}"),
                    spec[field].as_str().unwrap_or(""),
                    "field is immutable",
                ));
            }
        }
    }
    causes
}

/// Defaults, prunes and validates custom resource `obj` of `def` by its schema.
pub fn admit(def: &ResourceDef, obj: &mut Value) -> schema::Admitted {
    match served(def).and_then(|s| s.schema.clone()) {
        Some(schema) => schema::admit(&schema, obj),
        None => schema::Admitted::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn website() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "websites.extensions.example.com"},
            "spec": {"group": "extensions.example.com", "scope": "Namespaced",
                "names": {"kind": "Website", "plural": "websites", "shortNames": ["ws"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}}},
                    {"name": "v1beta1", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn defaults_checks_and_status() {
        let mut crd = website();
        apply_defaults(&mut crd);
        assert_eq!(crd["spec"]["names"]["singular"], "website");
        assert_eq!(crd["spec"]["names"]["listKind"], "WebsiteList");
        assert!(check(&crd, None).is_empty(), "{:?}", check(&crd, None));
        let st = status(&crd, None);
        assert_eq!(st["storedVersions"], json!(["v1"]));
        assert_eq!(st["conditions"][1]["type"], "Established");

        let mut bad = website();
        bad["metadata"]["name"] = json!("sites.extensions.example.com");
        bad["spec"]["scope"] = json!("Global");
        bad["spec"]["versions"][1]["storage"] = json!(true);
        bad["spec"]["versions"][0]["schema"] = json!({});
        let fields: Vec<String> = check(&bad, None).into_iter().map(|c| c.field).collect();
        for f in [
            "metadata.name",
            "spec.scope",
            "spec.versions",
            "spec.versions[0].schema.openAPIV3Schema",
            "spec.names.listKind",
        ] {
            assert!(fields.iter().any(|g| g == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn registering_serves_the_served_versions_once() {
        let mut crd = website();
        crd["metadata"]["name"] = json!("websites.test-register.example.com");
        crd["spec"]["group"] = json!("test-register.example.com");
        apply_defaults(&mut crd);
        register(&crd);
        let d = find("test-register.example.com", "v1", "websites").expect("served");
        assert_eq!(
            (d.kind, d.namespaced, d.short_names),
            ("Website", true, &["ws"][..])
        );
        assert!(d.has("status"));
        assert!(find("test-register.example.com", "v1beta1", "websites").is_none());
        register(&crd);
        let again = find("test-register.example.com", "v1", "websites").unwrap();
        assert!(std::ptr::eq(d, again), "the same definition is reused");
        unregister("websites.test-register.example.com");
        assert!(find("test-register.example.com", "v1", "websites").is_none());
    }
}
