//! Schema checks through the `k8s-openapi` types (type errors, unknown fields) and the semantic
//! validation Kubernetes answers with 422 Invalid.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
    storage,
};
use serde_json::Value;

use super::status::{ApiError, Cause};

/// Decodes `v` as the typed object of `kind` and encodes it again: the result keeps only known
/// fields in canonical form. Type errors name the failing path.
pub fn roundtrip(kind: &str, v: &Value) -> Result<Value, ApiError> {
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    macro_rules! rt {
        ($t:ty) => {{
            let typed: $t = serde_path_to_error::deserialize(v).map_err(|e| {
                ApiError::BadRequest(format!(
                    "error decoding {kind}: {}: {}",
                    e.path(),
                    e.inner()
                ))
            })?;
            serde_json::to_value(typed).map_err(|e| ApiError::Internal(e.to_string()))
        }};
    }
    match kind {
        "Namespace" => rt!(core::v1::Namespace),
        "Pod" => rt!(core::v1::Pod),
        "Service" => rt!(core::v1::Service),
        "Endpoints" => rt!(core::v1::Endpoints),
        "ConfigMap" => rt!(core::v1::ConfigMap),
        "Secret" => rt!(core::v1::Secret),
        "Node" => rt!(core::v1::Node),
        "Event" if api_version == "events.k8s.io/v1" => rt!(events::v1::Event),
        "Event" => rt!(core::v1::Event),
        "ReplicationController" => rt!(core::v1::ReplicationController),
        "ControllerRevision" => rt!(apps::v1::ControllerRevision),
        "CronJob" => rt!(batch::v1::CronJob),
        "EndpointSlice" => rt!(discovery::v1::EndpointSlice),
        "StorageClass" => rt!(storage::v1::StorageClass),
        "ServiceAccount" => rt!(core::v1::ServiceAccount),
        "PersistentVolume" => rt!(core::v1::PersistentVolume),
        "PersistentVolumeClaim" => rt!(core::v1::PersistentVolumeClaim),
        "LimitRange" => rt!(core::v1::LimitRange),
        "ResourceQuota" => rt!(core::v1::ResourceQuota),
        "Deployment" => rt!(apps::v1::Deployment),
        "ReplicaSet" => rt!(apps::v1::ReplicaSet),
        "StatefulSet" => rt!(apps::v1::StatefulSet),
        "DaemonSet" => rt!(apps::v1::DaemonSet),
        "HorizontalPodAutoscaler" => rt!(autoscaling::v2::HorizontalPodAutoscaler),
        "PodDisruptionBudget" => rt!(policy::v1::PodDisruptionBudget),
        "Job" => rt!(batch::v1::Job),
        "Lease" => rt!(coordination::v1::Lease),
        "Ingress" => rt!(networking::v1::Ingress),
        "IngressClass" => rt!(networking::v1::IngressClass),
        "Binding" => rt!(core::v1::Binding),
        "Role" => rt!(rbac::v1::Role),
        "ClusterRole" => rt!(rbac::v1::ClusterRole),
        "RoleBinding" => rt!(rbac::v1::RoleBinding),
        "ClusterRoleBinding" => rt!(rbac::v1::ClusterRoleBinding),
        "Scale" => rt!(autoscaling::v1::Scale),
        "CustomResourceDefinition" => rt!(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition
        ),
        other => Err(ApiError::BadRequest(format!("unsupported kind {other}"))),
    }
}

/// Paths of fields present (non-null) in `input` but dropped by [`roundtrip`].
pub fn unknown_fields(input: &Value, known: &Value) -> Vec<String> {
    fn walk(path: &str, input: &Value, known: &Value, out: &mut Vec<String>) {
        match (input, known) {
            (Value::Object(i), Value::Object(k)) => {
                for (key, v) in i {
                    if v.is_null() {
                        continue;
                    }
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match k.get(key) {
                        Some(kv) => walk(&p, v, kv, out),
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(i), Value::Array(k)) => {
                for (n, (iv, kv)) in i.iter().zip(k.iter()).enumerate() {
                    walk(&format!("{path}[{n}]"), iv, kv, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", input, known, &mut out);
    out
}

/// Whether `s` is a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a qualified name (`[prefix/]name`: DNS subdomain prefix, name ≤ 63 characters of
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric), as label and annotation keys.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns1123_subdomain)
}

const QUALIFIED_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

/// Whether `s` is a DNS-1123 subdomain (dot-separated labels, ≤ 253).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn check_name(kind: &str, name: &str, field: &str, causes: &mut Vec<Cause>) {
    if kind == "Service" {
        // DNS-1035: a label that starts with a letter.
        if !is_dns1123_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            causes.push(Cause::invalid(field, name, DNS1035_MSG));
        }
    } else if kind == "Namespace" {
        if !is_dns1123_label(name) {
            causes.push(Cause::invalid(field, name, LABEL_MSG));
        }
    } else if !is_dns1123_subdomain(name) {
        causes.push(Cause::invalid(field, name, SUBDOMAIN_MSG));
    }
}

fn check_containers(path: &str, spec: &Value, causes: &mut Vec<Cause>) {
    match spec["containers"].as_array() {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                match c["name"].as_str() {
                    None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
                    Some(n) if !is_dns1123_label(n) => {
                        causes.push(Cause::invalid(format!("{p}.name"), n, LABEL_MSG))
                    }
                    Some(n) if seen.contains(&n) => causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        message: format!("Duplicate value: \"{n}\""),
                        field: format!("{p}.name"),
                    }),
                    Some(n) => seen.push(n),
                }
                if c["image"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(format!("{p}.image")));
                }
            }
        }
    }
}

fn check_template(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if spec["selector"].is_null() && kind != "Job" {
        causes.push(Cause::required("spec.selector"));
    }
    let tpl = &spec["template"];
    check_containers("spec.template.spec", &tpl["spec"], causes);
    if kind == "Job"
        && !matches!(
            tpl["spec"]["restartPolicy"].as_str(),
            Some("OnFailure" | "Never")
        )
    {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
            field: "spec.template.spec.restartPolicy".into(),
        });
    }
    if !spec["selector"].is_null() {
        let sel = super::selectors::LabelSelector::from_any(&spec["selector"]);
        if sel.0.is_empty() && kind != "Job" {
            causes.push(Cause::invalid(
                "spec.selector",
                "",
                "empty selector is invalid for deployment",
            ));
        } else if !sel.matches(&super::selectors::labels_of(tpl)) {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                &serde_json::to_string(&tpl["metadata"]["labels"]).unwrap_or_default(),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(r) = spec["replicas"].as_i64() {
        if r < 0 {
            causes.push(Cause::invalid(
                "spec.replicas",
                &r.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Upstream's CronJob schedule checks: a standard 5-field expression or an `@` macro, no
/// `TZ=`/`CRON_TZ=` prefix together with `spec.timeZone`, and a known time zone.
fn check_schedule(schedule: &str, time_zone: Option<&str>, causes: &mut Vec<Cause>) {
    let mut expr = schedule.trim();
    let mut prefix_zone = None;
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = expr.strip_prefix(prefix) {
            let (z, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            prefix_zone = Some(z);
            expr = tail.trim();
        }
    }
    if prefix_zone.is_some() && time_zone.is_some() {
        causes.push(Cause::invalid(
            "spec.schedule",
            schedule,
            "cannot use both timeZone field and TZ or CRON_TZ in schedule",
        ));
    }
    for (field, zone) in [("spec.timeZone", time_zone), ("spec.schedule", prefix_zone)] {
        if let Some(z) = zone {
            if z.parse::<chrono_tz::Tz>().is_err() {
                causes.push(Cause::invalid(field, z, format!("unknown time zone {z}")));
            }
        }
    }
    let expr = if expr.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        expr
    };
    let fields_ok = expr.starts_with('@') || expr.split_whitespace().count() == 5;
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr);
    if !fields_ok || parsed.is_err() {
        let why = match parsed {
            Err(e) => e.to_string(),
            Ok(_) => "expected exactly 5 fields".into(),
        };
        causes.push(Cause::invalid(
            "spec.schedule",
            schedule,
            format!("unparseable schedule: {why}"),
        ));
    }
}

/// The volume sources of a PersistentVolume spec.
const PV_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// Upstream's PersistentVolume spec rules: a `storage` capacity (and nothing else), access
/// modes, exactly one volume source.
fn check_volume(spec: &Value, causes: &mut Vec<Cause>) {
    let cap = spec["capacity"].as_object();
    if cap.is_none_or(|c| c.is_empty()) {
        causes.push(Cause::required("spec.capacity"));
    } else if cap.is_some_and(|c| c.len() > 1 || !c.contains_key("storage")) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            message: "Unsupported value: supported values: \"storage\"".into(),
            field: "spec.capacity".into(),
        });
    }
    if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
        causes.push(Cause::required("spec.accessModes"));
    }
    let sources: Vec<&str> = PV_SOURCES
        .iter()
        .copied()
        .filter(|k| !spec[*k].is_null())
        .collect();
    match sources.len() {
        0 => causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must specify a volume type".into(),
            field: "spec".into(),
        }),
        1 => {}
        _ => causes.push(Cause {
            reason: "FieldValueForbidden",
            message: "Forbidden: may not specify more than 1 volume type".into(),
            field: format!("spec.{}", sources[1]),
        }),
    }
}

/// Upstream's PersistentVolumeClaim update rule: the spec is immutable except
/// `resources.requests` of a Bound claim (never shrinking), `volumeName` of a claim that has
/// none yet (binding) and `storageClassName` of a claim that has none (the default class given
/// later).
pub fn validate_claim_update(old: &Value, new: &Value) -> Result<(), ApiError> {
    let mut o = old["spec"].clone();
    let mut n = new["spec"].clone();
    if o["volumeName"].as_str().unwrap_or("").is_empty() {
        n["volumeName"] = o["volumeName"].clone();
    }
    if o["storageClassName"].is_null() && o["volumeName"].as_str().unwrap_or("").is_empty() {
        n["storageClassName"] = Value::Null;
        o["storageClassName"] = Value::Null;
    }
    let bound = new["status"]["phase"] == "Bound";
    if bound {
        n["resources"]["requests"]["storage"] = o["resources"]["requests"]["storage"].clone();
    }
    let mut causes = Vec::new();
    if strip_nulls(&o) != strip_nulls(&n) {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            message: "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into(),
            field: "spec".into(),
        });
    }
    let size = |v: &Value| {
        v["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(|q| crate::admission::quantity::Milli::parse(q).ok())
    };
    if let (Some(a), Some(b)) = (size(old), size(new)) {
        if b < a {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: field can not be less than previous value".into(),
                field: "spec.resources.requests.storage".into(),
            });
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: "PersistentVolumeClaim".into(),
        name: new["metadata"]["name"].as_str().unwrap_or("").into(),
        causes,
    })
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), strip_nulls(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Semantic validation of a (normalized) object; `Err(Invalid)` lists every failing field.
pub fn validate(kind: &str, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else {
        check_name(kind, name, "metadata.name", &mut causes);
    }
    for (k, v) in obj["metadata"]["labels"].as_object().into_iter().flatten() {
        if !is_qualified_name(k) {
            causes.push(Cause::invalid("metadata.labels", k, QUALIFIED_MSG));
        }
        let val = v.as_str().unwrap_or("");
        let ok = val.len() <= 63
            && val
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && val.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
            && val.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
        if !ok {
            causes.push(Cause::invalid(
                "metadata.labels",
                val,
                format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label {k})"),
            ));
        }
    }
    match kind {
        "Pod" => check_containers("spec", &obj["spec"], &mut causes),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => check_template(kind, obj, &mut causes),
        "CustomResourceDefinition" => causes.extend(crate::crd::check(obj, None)),
        "CronJob" => {
            match obj["spec"]["schedule"].as_str().unwrap_or("") {
                "" => causes.push(Cause::required("spec.schedule")),
                schedule => check_schedule(schedule, obj["spec"]["timeZone"].as_str(), &mut causes),
            }
            let tpl = &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            check_containers("spec.jobTemplate.spec.template.spec", tpl, &mut causes);
            if !matches!(tpl["restartPolicy"].as_str(), Some("OnFailure" | "Never")) {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
                    field: "spec.jobTemplate.spec.template.spec.restartPolicy".into(),
                });
            }
        }
        "Service" => {
            let spec = &obj["spec"];
            let t = spec["type"].as_str().unwrap_or("ClusterIP");
            let headless = spec["clusterIP"].as_str() == Some("None");
            let ports = spec["ports"].as_array().map_or(0, Vec::len);
            if ports == 0 && t != "ExternalName" && !headless {
                causes.push(Cause::required("spec.ports"));
            }
            for (i, p) in spec["ports"].as_array().into_iter().flatten().enumerate() {
                let port = p["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].port"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if ports > 1 && p["name"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(format!("spec.ports[{i}].name")));
                }
            }
        }
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                for k in obj[field].as_object().into_iter().flatten().map(|(k, _)| k) {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !ok {
                        causes.push(Cause::invalid(
                            format!("{field}[{k}]"),
                            k,
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                        ));
                    }
                }
            }
        }
        "PersistentVolumeClaim" => {
            if obj["spec"]["accessModes"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.accessModes"));
            }
            if obj["spec"]["resources"]["requests"]["storage"].is_null() {
                causes.push(Cause::required("spec.resources[storage]"));
            }
        }
        "PersistentVolume" => check_volume(&obj["spec"], &mut causes),
        "HorizontalPodAutoscaler" if obj["spec"]["maxReplicas"].as_i64().unwrap_or(0) < 1 => {
            causes.push(Cause::invalid(
                "spec.maxReplicas",
                "0",
                "must be greater than or equal to 1",
            ));
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: kind.to_string(),
            name: name.to_string(),
            causes,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cron_schedules_as_upstream_checks_them() {
        let check = |s: &str, tz: Option<&str>| {
            let mut c = Vec::new();
            check_schedule(s, tz, &mut c);
            c.into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(check("*/15 * * * *", None).is_empty());
        assert!(check("@hourly", Some("Europe/Berlin")).is_empty());
        assert!(check("TZ=Asia/Tokyo 0 9 * * 1-5", None).is_empty());
        assert!(check("0 0 * *", None)[0].contains("unparseable schedule"));
        assert!(check("61 * * * *", None)[0].contains("unparseable schedule"));
        assert!(check("0 * * * *", Some("Mars/Base"))[0].contains("unknown time zone Mars/Base"));
        assert!(check("TZ=UTC 0 * * * *", Some("UTC"))[0]
            .contains("cannot use both timeZone field and TZ or CRON_TZ in schedule"));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-a"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("Tier_1"));
        assert!(!is_qualified_name("bad key"));
        assert!(!is_qualified_name("Example.com/x"));
        let svc =
            serde_json::json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}});
        assert!(validate("Service", &svc).is_err());
    }

    #[test]
    fn unknown_fields_found() {
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}, "extra": true});
        let known = roundtrip("ConfigMap", &input).unwrap();
        assert_eq!(
            unknown_fields(&input, &known),
            vec!["extra", "metadata.bogus"]
        );
    }

    #[test]
    fn type_errors_name_the_path() {
        let input = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": "three"}});
        let err = roundtrip("Deployment", &input).unwrap_err().to_string();
        assert!(err.contains("spec.replicas"), "{err}");
    }

    #[test]
    fn invalid_pod_lists_causes() {
        let pod =
            json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}]}});
        match validate("Pod", &pod) {
            Err(ApiError::Invalid { causes, .. }) => {
                let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
                assert_eq!(fields, vec!["metadata.name", "spec.containers[0].image"]);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;
    use serde_json::json;

    fn fields(r: Result<(), ApiError>) -> Vec<String> {
        match r {
            Ok(()) => vec![],
            Err(ApiError::Invalid { causes, .. }) => causes
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect(),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn volumes_need_one_source_and_a_capacity() {
        let ok = json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/d"}}});
        assert!(fields(validate("PersistentVolume", &ok)).is_empty());
        let bad = json!({"metadata": {"name": "pv"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/d"}, "nfs": {"server": "s", "path": "/"}}});
        assert_eq!(
            fields(validate("PersistentVolume", &bad)),
            vec![
                "spec.capacity: Required value",
                "spec.nfs: Forbidden: may not specify more than 1 volume type"
            ]
        );
        let none = json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            fields(validate("PersistentVolume", &none)),
            vec!["spec: Required value: must specify a volume type"]
        );
    }

    #[test]
    fn claim_spec_is_immutable_but_binding_and_growth_are_allowed() {
        let old = json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}});
        let mut bind = old.clone();
        bind["spec"]["volumeName"] = json!("pv1");
        bind["spec"]["storageClassName"] = json!("std");
        assert!(fields(validate_claim_update(&old, &bind)).is_empty());
        let mut modes = old.clone();
        modes["spec"]["accessModes"] = json!(["ReadOnlyMany"]);
        assert_eq!(fields(validate_claim_update(&old, &modes)).len(), 1);
        let mut bound = bind.clone();
        bound["status"]["phase"] = json!("Bound");
        let mut grow = bound.clone();
        grow["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(fields(validate_claim_update(&bound, &grow)).is_empty());
        let mut shrink = grow.clone();
        shrink["spec"]["resources"]["requests"]["storage"] = json!("1Mi");
        assert_eq!(
            fields(validate_claim_update(&grow, &shrink)),
            vec!["spec.resources.requests.storage: Forbidden: field can not be less than previous value"]
        );
        let mut unbound_grow = old.clone();
        unbound_grow["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(fields(validate_claim_update(&old, &unbound_grow)).len(), 1);
    }
}
