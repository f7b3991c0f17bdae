//! ResourceQuota arithmetic, as upstream's quota evaluators count: compute resources of
//! non-terminal pods (`requests.cpu`/`cpu`, `requests.memory`/`memory`, `limits.*`,
//! `requests.ephemeral-storage`), object counts (`pods`, `services`, `services.nodeports`,
//! `services.loadbalancers`, `configmaps`, `secrets`, `persistentvolumeclaims`,
//! `replicationcontrollers`, `resourcequotas`, and `count/<resource>[.<group>]` for any kind),
//! `requests.storage` of claims; the pod scopes BestEffort, NotBestEffort, Terminating and
//! NotTerminating; and the messages of a refusal.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity::Milli;

/// Usage per resource name.
pub type Usage = BTreeMap<String, Milli>;

const COMPUTE: &[(&str, &str, &str)] = &[
    // (quota name, container field, resource)
    ("requests.cpu", "requests", "cpu"),
    ("cpu", "requests", "cpu"),
    ("requests.memory", "requests", "memory"),
    ("memory", "requests", "memory"),
    ("limits.cpu", "limits", "cpu"),
    ("limits.memory", "limits", "memory"),
    (
        "requests.ephemeral-storage",
        "requests",
        "ephemeral-storage",
    ),
    ("limits.ephemeral-storage", "limits", "ephemeral-storage"),
];

fn q(v: &Value) -> Option<Milli> {
    v.as_str()
        .map(str::to_string)
        .or_else(|| v.as_i64().map(|n| n.to_string()))
        .and_then(|s| Milli::parse(&s).ok())
}

fn one() -> Milli {
    Milli(1000)
}

/// Whether a pod no longer uses its resources (Succeeded or Failed).
pub fn terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn best_effort(pod: &Value) -> bool {
    ["initContainers", "containers"].iter().all(|k| {
        pod["spec"][*k].as_array().into_iter().flatten().all(|c| {
            ["requests", "limits"]
                .iter()
                .all(|f| c["resources"][*f].as_object().is_none_or(|m| m.is_empty()))
        })
    })
}

/// Whether quota `quota` applies to an object of `kind` by its scopes.
pub fn in_scope(quota: &Value, kind: &str, obj: &Value) -> bool {
    let scopes: Vec<&str> = quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if scopes.is_empty() {
        return true;
    }
    if kind != "Pod" {
        return false;
    }
    scopes.iter().all(|s| match *s {
        "BestEffort" => best_effort(obj),
        "NotBestEffort" => !best_effort(obj),
        "Terminating" => !obj["spec"]["activeDeadlineSeconds"].is_null(),
        "NotTerminating" => obj["spec"]["activeDeadlineSeconds"].is_null(),
        _ => false,
    })
}

/// A pod's compute usage: max of init containers, sum of the others (the pod's effective
/// requests), per upstream's `PodUsageFunc`.
fn pod_compute(pod: &Value, field: &str, res: &str) -> Milli {
    let get = |c: &Value| q(&c["resources"][field][res]).unwrap_or_default();
    let sum = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(get)
        .fold(Milli::default(), |a, b| a + b);
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(get)
        .max()
        .unwrap_or_default();
    sum.max(init)
}

/// What one object of `plural.group` (kind `kind`) uses.
pub fn usage_of(kind: &str, plural: &str, group: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if kind == "Pod" && terminal(obj) {
        return u;
    }
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    u.insert(count, one());
    if group.is_empty() {
        match plural {
            "pods"
            | "services"
            | "configmaps"
            | "secrets"
            | "persistentvolumeclaims"
            | "replicationcontrollers"
            | "resourcequotas" => {
                u.insert(plural.to_string(), one());
            }
            _ => {}
        }
    }
    match kind {
        "Pod" => {
            for (name, field, res) in COMPUTE {
                let v = pod_compute(obj, field, res);
                if v.0 != 0 {
                    u.insert(name.to_string(), v);
                }
            }
        }
        "Service" => match obj["spec"]["type"].as_str() {
            Some("NodePort") => {
                u.insert("services.nodeports".into(), one());
            }
            Some("LoadBalancer") => {
                u.insert("services.loadbalancers".into(), one());
                u.insert("services.nodeports".into(), one());
            }
            _ => {}
        },
        "PersistentVolumeClaim" => {
            if let Some(s) = q(&obj["spec"]["resources"]["requests"]["storage"]) {
                u.insert("requests.storage".into(), s);
            }
        }
        _ => {}
    }
    u
}

/// Upstream's `must specify …` for compute resources a quota constrains but a pod's
/// containers do not set.
pub fn missing_specs(quota: &Value, pod: &Value) -> Option<String> {
    let hard = quota["spec"]["hard"].as_object()?;
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, field, res) in COMPUTE {
        if !hard.contains_key(*name) {
            continue;
        }
        for key in ["initContainers", "containers"] {
            for c in pod["spec"][key].as_array().into_iter().flatten() {
                if c["resources"][*field][*res].is_null() {
                    let cname = c["name"].as_str().unwrap_or("").to_string();
                    let list = missing.entry(name).or_default();
                    if !list.contains(&cname) {
                        list.push(cname);
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let reasons: Vec<String> = missing
        .iter()
        .map(|(r, cs)| {
            let mut cs = cs.clone();
            cs.sort();
            format!("{r} for: {}", cs.join(","))
        })
        .collect();
    Some(format!("must specify {}", reasons.join("; ")))
}

/// The hard limits of a quota.
pub fn hard(quota: &Value) -> Usage {
    quota["spec"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| q(v).map(|m| (k.clone(), m)))
        .collect()
}

/// The recorded usage of a quota.
pub fn used(quota: &Value) -> Usage {
    quota["status"]["used"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| q(v).map(|m| (k.clone(), m)))
        .collect()
}

fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The new usage of `quota` after adding `delta`, or upstream's refusal (`exceeded quota: …`).
pub fn charge(
    quota_name: &str,
    hard: &Usage,
    used: &Usage,
    delta: &Usage,
) -> Result<Usage, String> {
    let mut next = used.clone();
    let (mut req, mut now, mut lim) = (Usage::new(), Usage::new(), Usage::new());
    for (k, limit) in hard {
        let Some(d) = delta.get(k) else { continue };
        let cur = used.get(k).copied().unwrap_or_default();
        let total = cur + *d;
        if total > *limit {
            req.insert(k.clone(), *d);
            now.insert(k.clone(), cur);
            lim.insert(k.clone(), *limit);
        }
        next.insert(k.clone(), total);
    }
    if !req.is_empty() {
        return Err(format!(
            "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
            pretty(&req),
            pretty(&now),
            pretty(&lim)
        ));
    }
    Ok(next)
}

/// The `status` of a quota with `used` (only the resources it limits).
pub fn status(quota: &Value, used: &Usage) -> Value {
    let hard = quota["spec"]["hard"].clone();
    let mut u = serde_json::Map::new();
    for k in hard.as_object().into_iter().flatten().map(|(k, _)| k) {
        u.insert(
            k.clone(),
            Value::String(used.get(k).copied().unwrap_or_default().to_string()),
        );
    }
    serde_json::json!({"hard": hard, "used": u})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(s: &str) -> Milli {
        Milli::parse(s).unwrap()
    }

    #[test]
    fn pod_usage_and_scopes() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}]}});
        let u = usage_of("Pod", "pods", "", &pod);
        assert_eq!(u["pods"], m("1"));
        assert_eq!(u["count/pods"], m("1"));
        assert_eq!(
            u["requests.cpu"],
            m("500m"),
            "an init container's larger request wins"
        );
        assert_eq!(u["memory"], m("64Mi"));
        assert_eq!(u["limits.memory"], m("128Mi"));
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage_of("Pod", "pods", "", &done).is_empty());
        let q = json!({"spec": {"scopes": ["BestEffort"]}});
        assert!(!in_scope(&q, "Pod", &pod));
        assert!(in_scope(
            &q,
            "Pod",
            &json!({"spec": {"containers": [{"name": "x"}]}})
        ));
        assert!(!in_scope(&q, "Service", &json!({})));
        let svc = usage_of(
            "Service",
            "services",
            "",
            &json!({"spec": {"type": "LoadBalancer"}}),
        );
        assert_eq!(
            (svc["services"], svc["services.nodeports"]),
            (m("1"), m("1"))
        );
        let d = usage_of("Deployment", "deployments", "apps", &json!({}));
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["count/deployments.apps"]);
    }

    #[test]
    fn refusals_in_upstreams_words() {
        let quota =
            json!({"spec": {"hard": {"limits.memory": "1Gi", "requests.cpu": "1", "pods": "2"}}});
        let pod = json!({"spec": {"containers": [{"name": "main", "resources": {"requests": {"memory": "1Mi"}}}]}});
        assert_eq!(
            missing_specs(&quota, &pod).unwrap(),
            "must specify limits.memory for: main; requests.cpu for: main"
        );
        let used = Usage::from([
            ("pods".to_string(), m("2")),
            ("limits.memory".to_string(), m("768Mi")),
        ]);
        let delta = Usage::from([
            ("pods".to_string(), m("1")),
            ("limits.memory".to_string(), m("512Mi")),
        ]);
        assert_eq!(
            charge("compute", &hard(&quota), &used, &delta).unwrap_err(),
            "exceeded quota: compute, requested: limits.memory=512Mi,pods=1, used: limits.memory=768Mi,pods=2, limited: limits.memory=1Gi,pods=2"
        );
        let small = Usage::from([("pods".to_string(), m("1"))]);
        let next = charge("compute", &hard(&quota), &Usage::new(), &small).unwrap();
        assert_eq!(
            status(&quota, &next)["used"],
            json!({"limits.memory": "0", "pods": "1", "requests.cpu": "0"})
        );
    }
}
