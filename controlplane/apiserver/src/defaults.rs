//! Server-set metadata (uid, creationTimestamp, generation) and the defaults kubectl shows.

use base64::Engine;
use serde_json::{json, Map, Value};

/// Current time in RFC 3339 with second precision, as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.to_string(), v);
        }
    }
}

/// Mutable elements of the array at `v[key]`, without inserting the key when absent.
fn items_mut<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn obj_mut<'a>(parent: &'a mut Value, key: &str) -> &'a mut Value {
    if !parent[key].is_object() {
        parent[key] = Value::Object(Map::new());
    }
    &mut parent[key]
}

fn container_defaults(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    let last = image.rsplit('/').next().unwrap_or("");
    let latest = !last.contains(':') || last.ends_with(":latest");
    let policy = if latest && !image.contains('@') {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    for p in items_mut(c, "ports") {
        set_default(p, "protocol", json!("TCP"));
    }
}

/// Defaults of a pod spec (also used in templates).
pub fn pod_spec_defaults(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            container_defaults(c);
        }
    }
    for v in items_mut(spec, "volumes") {
        for src in ["configMap", "secret"] {
            if v[src].is_object() {
                set_default(&mut v[src], "defaultMode", json!(420));
            }
        }
    }
}

/// `type` defaults to RollingUpdate, whose parameters get `rolling` defaults field by field.
fn strategy_defaults(spec: &mut Value, field: &str, rolling: Value) {
    let st = obj_mut(spec, field);
    set_default(st, "type", json!("RollingUpdate"));
    if st["type"] == "RollingUpdate" {
        let ru = obj_mut(st, "rollingUpdate");
        for (k, v) in rolling.as_object().into_iter().flatten() {
            set_default(ru, k, v.clone());
        }
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let cs: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let none = cs.iter().all(|c| {
        c["resources"]["requests"]
            .as_object()
            .is_none_or(Map::is_empty)
            && c["resources"]["limits"]
                .as_object()
                .is_none_or(Map::is_empty)
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        let l = &c["resources"]["limits"];
        let r = &c["resources"]["requests"];
        ["cpu", "memory"]
            .iter()
            .all(|k| !l[k].is_null() && (r[k].is_null() || r[k] == l[k]))
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Applies per-kind defaults to a new or updated object.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            let spec = obj_mut(obj, "spec");
            pod_spec_defaults(spec);
            // SetDefaults_Pod: a limit without a request is also the request.
            for key in ["containers", "initContainers"] {
                for c in items_mut(spec, key) {
                    let limits = c["resources"]["limits"].clone();
                    for (k, v) in limits.as_object().into_iter().flatten() {
                        let res = obj_mut(c, "resources");
                        let req = obj_mut(res, "requests");
                        if req.get(k).is_none() {
                            req[k] = v.clone();
                        }
                    }
                }
            }
            // v1 conversion: the deprecated `serviceAccount` names the account when
            // `serviceAccountName` does not.
            if spec["serviceAccountName"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                if let Some(old) = spec["serviceAccount"].as_str().filter(|s| !s.is_empty()) {
                    spec["serviceAccountName"] = json!(old.to_string());
                }
            }
            set_default(spec, "serviceAccountName", json!("default"));
            set_default(spec, "enableServiceLinks", json!(true));
            set_default(spec, "priority", json!(0));
            set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        "ReplicationController" => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            // An empty selector defaults to the template's labels.
            if spec["selector"].as_object().is_none_or(Map::is_empty) {
                if let Some(l) = spec["template"]["metadata"]["labels"].as_object() {
                    spec["selector"] = Value::Object(l.clone());
                }
            }
            if spec["template"]["spec"].is_object() {
                pod_spec_defaults(&mut spec["template"]["spec"]);
            }
        }
        "CronJob" => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            if spec["jobTemplate"]["spec"]["template"]["spec"].is_object() {
                pod_spec_defaults(&mut spec["jobTemplate"]["spec"]["template"]["spec"]);
            }
        }
        "CustomResourceDefinition" => crate::crd::apply_defaults(obj),
        "LimitRange" => crate::admission::limits::default_limit_range(obj),
        "StorageClass" => {
            set_default(obj, "reclaimPolicy", json!("Delete"));
            set_default(obj, "volumeBindingMode", json!("Immediate"));
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
            let spec = obj_mut(obj, "spec");
            if kind != "DaemonSet" && kind != "Job" {
                set_default(spec, "replicas", json!(1));
            }
            if spec["template"]["spec"].is_object() {
                pod_spec_defaults(&mut spec["template"]["spec"]);
            }
            if kind == "Job" {
                // Upstream's SetDefaults_Job: neither set means one pod; a parallelism alone
                // leaves completions unset (a work queue).
                if spec["completions"].is_null() && spec["parallelism"].is_null() {
                    spec["completions"] = json!(1);
                }
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
            }
            match kind {
                "Deployment" => {
                    strategy_defaults(
                        spec,
                        "strategy",
                        json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
                    );
                    set_default(spec, "revisionHistoryLimit", json!(10));
                    set_default(spec, "progressDeadlineSeconds", json!(600));
                }
                "StatefulSet" => {
                    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                    strategy_defaults(spec, "updateStrategy", json!({"partition": 0}));
                    set_default(spec, "revisionHistoryLimit", json!(10));
                    set_default(
                        spec,
                        "persistentVolumeClaimRetentionPolicy",
                        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                    );
                    for t in items_mut(spec, "volumeClaimTemplates") {
                        set_default(t, "apiVersion", json!("v1"));
                        set_default(t, "kind", json!("PersistentVolumeClaim"));
                        if t["spec"].is_object() {
                            set_default(&mut t["spec"], "volumeMode", json!("Filesystem"));
                        }
                    }
                }
                "DaemonSet" => {
                    strategy_defaults(
                        spec,
                        "updateStrategy",
                        json!({"maxUnavailable": 1, "maxSurge": 0}),
                    );
                    set_default(spec, "revisionHistoryLimit", json!(10));
                }
                _ => {}
            }
        }
        "Service" => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            for p in items_mut(spec, "ports") {
                set_default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                set_default(p, "targetPort", port);
            }
        }
        "Namespace" => {
            let status = obj_mut(obj, "status");
            set_default(status, "phase", json!("Active"));
        }
        "Secret" => {
            set_default(obj, "type", json!("Opaque"));
            if let Some(sd) = obj
                .as_object_mut()
                .and_then(|m| m.remove("stringData"))
                .and_then(|v| v.as_object().cloned())
            {
                let data = obj_mut(obj, "data");
                for (k, v) in sd {
                    let enc = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or("").as_bytes());
                    data[k] = json!(enc);
                }
            }
        }
        "PersistentVolumeClaim" => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "volumeMode", json!("Filesystem"));
            let status = obj_mut(obj, "status");
            set_default(status, "phase", json!("Pending"));
        }
        "PersistentVolume" => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
            let status = obj_mut(obj, "status");
            set_default(status, "phase", json!("Available"));
        }
        "Node" => {
            let status = obj_mut(obj, "status");
            set_default(status, "phase", json!("Running"));
        }
        _ => {}
    }
}

/// Upstream's Job `PrepareForCreate` (`generateSelector`): unless `spec.manualSelector` is true,
/// the template gets the controller-uid and job-name labels (current and legacy keys) and the
/// selector is the controller-uid. Only on create: the selector is immutable afterwards.
pub fn job_selector(obj: &mut Value) {
    if obj["spec"]["manualSelector"] == json!(true) {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let name = obj["metadata"]["name"].clone();
    // The Job's own labels default to the template's (before the generated ones are added).
    if obj["metadata"]["labels"]
        .as_object()
        .is_none_or(Map::is_empty)
    {
        if let Some(l) = obj["spec"]["template"]["metadata"]["labels"].as_object() {
            if !l.is_empty() {
                obj["metadata"]["labels"] = Value::Object(l.clone());
            }
        }
    }
    let spec = obj_mut(obj, "spec");
    let labels = obj_mut(obj_mut(obj_mut(spec, "template"), "metadata"), "labels");
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[k] = v.clone();
    }
    if spec["selector"].is_null() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
}

/// Status a freshly created object starts with, for kinds whose status the server owns.
pub fn initial_status(kind: &str, obj: &Value) -> Option<Value> {
    match kind {
        "CustomResourceDefinition" => Some(crate::crd::status(obj, None)),
        "Pod" => Some(json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])})),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "Service"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget"
        | "Ingress" => {
            if kind == "Service" {
                Some(json!({"loadBalancer": {}}))
            } else {
                Some(json!({}))
            }
        }
        _ => None,
    }
}

/// The part of an object that bumps `metadata.generation` when it changes.
pub fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// A short random suffix for `generateName`.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let u = uuid::Uuid::new_v4();
    u.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_defaults_and_generated_selector() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {
            "template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        apply_defaults("Job", &mut job);
        job_selector(&mut job);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["metadata"]["labels"], json!({"app": "pi"}));
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let l = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(l["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(l["job-name"], "pi");
        assert_eq!(l["controller-uid"], "u-1");
        assert_eq!(l["app"], "pi");
        // A work queue: parallelism alone leaves completions unset.
        let mut queue = json!({"metadata": {"name": "q", "uid": "u-2"}, "spec": {"parallelism": 3,
            "manualSelector": true, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {}}}});
        apply_defaults("Job", &mut queue);
        job_selector(&mut queue);
        assert!(queue["spec"]["completions"].is_null());
        assert_eq!(
            queue["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
        assert!(queue["spec"]["template"]["metadata"]["labels"].is_null());
    }

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "x:1.0", "ports": [{"containerPort": 80}]}]}});
        apply_defaults("Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            initial_status("Pod", &pod).unwrap()["qosClass"],
            "BestEffort"
        );
    }

    #[test]
    fn secret_string_data() {
        let mut s = json!({"stringData": {"a": "hi"}});
        apply_defaults("Secret", &mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "aGk="}}));
    }

    #[test]
    fn service_target_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }
}
