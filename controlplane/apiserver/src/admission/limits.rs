//! The LimitRanger admission plugin: the namespace's LimitRanges give containers their
//! `default` limits and `defaultRequest` requests, then every `Container`, `Pod` and
//! `PersistentVolumeClaim` item's `min`, `max` and `maxLimitRequestRatio` is enforced, with
//! upstream's messages (the request is refused 403 Forbidden).

use serde_json::{json, Map, Value};

use super::quantity::Milli;

/// Upstream's LimitRange defaulting (`SetDefaults_LimitRangeItem`), for Container items: a
/// `max` is the `default` limit when none is given; the `default` limit (else `min`) is the
/// `defaultRequest`.
pub fn default_limit_range(lr: &mut Value) {
    for item in lr["spec"]["limits"].as_array_mut().into_iter().flatten() {
        if item["type"] != "Container" {
            continue;
        }
        let (max, min) = (item["max"].clone(), item["min"].clone());
        for (k, v) in max.as_object().into_iter().flatten() {
            if item["default"].get(k).is_none() {
                if !item["default"].is_object() {
                    item["default"] = json!({});
                }
                item["default"][k] = v.clone();
            }
        }
        let (default, min2) = (item["default"].clone(), min);
        for src in [&default, &min2] {
            for (k, v) in src.as_object().into_iter().flatten() {
                if item["defaultRequest"].get(k).is_none() {
                    if !item["defaultRequest"].is_object() {
                        item["defaultRequest"] = json!({});
                    }
                    item["defaultRequest"][k] = v.clone();
                }
            }
        }
    }
}

/// The pod's containers and init containers.
fn containers_mut(pod: &mut Value) -> impl Iterator<Item = &mut Value> {
    pod["spec"].as_object_mut().into_iter().flat_map(|m| {
        m.iter_mut()
            .filter(|(k, _)| *k == "containers" || *k == "initContainers")
            .flat_map(|(_, v)| v.as_array_mut().into_iter().flatten())
    })
}

fn set_missing(res: &mut Value, key: &str, from: &Value) {
    for (k, v) in from.as_object().into_iter().flatten() {
        if !res[key].is_object() {
            res[key] = json!({});
        }
        if res[key].get(k).is_none() {
            res[key][k] = v.clone();
        }
    }
}

/// Applies the Container items' defaults of `ranges` to `pod`'s containers.
pub fn default_pod(ranges: &[Value], pod: &mut Value) {
    for lr in ranges {
        for item in lr["spec"]["limits"].as_array().into_iter().flatten() {
            if item["type"] != "Container" {
                continue;
            }
            for c in containers_mut(pod) {
                if !c["resources"].is_object() {
                    c["resources"] = json!({});
                }
                // Upstream's mergeContainerResources: missing limits from `default`, missing
                // requests from `defaultRequest` (a limit the user set was already copied into
                // the request by the API defaults).
                set_missing(&mut c["resources"], "limits", &item["default"]);
                set_missing(&mut c["resources"], "requests", &item["defaultRequest"]);
            }
        }
    }
}

fn q(v: &Value) -> Option<Milli> {
    v.as_str()
        .map(str::to_string)
        .or_else(|| v.as_i64().map(|n| n.to_string()))
        .and_then(|s| Milli::parse(&s).ok())
}

fn shown(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// One min/max/ratio check of `what` ("Container", "Pod", "PersistentVolumeClaim") with its
/// `requests` and `limits` totals; appends upstream's messages to `errs`.
fn check_item(
    item: &Value,
    what: &str,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    errs: &mut Vec<String>,
) {
    for (res, min) in item["min"].as_object().into_iter().flatten() {
        let Some(m) = q(min) else { continue };
        match requests.get(res) {
            None => errs.push(format!(
                "minimum {res} usage per {what} is {}.  No request is specified",
                shown(min)
            )),
            Some(r) if q(r).is_some_and(|r| r < m) => errs.push(format!(
                "minimum {res} usage per {what} is {}, but request is {}",
                shown(min),
                shown(r)
            )),
            Some(_) => {}
        }
    }
    for (res, max) in item["max"].as_object().into_iter().flatten() {
        let Some(m) = q(max) else { continue };
        let (value, noun) = if what == "PersistentVolumeClaim" {
            (requests.get(res), "request")
        } else {
            (limits.get(res), "limit")
        };
        match value {
            None => errs.push(format!(
                "maximum {res} usage per {what} is {}.  No {noun} is specified",
                shown(max)
            )),
            Some(v) if q(v).is_some_and(|v| v > m) => errs.push(format!(
                "maximum {res} usage per {what} is {}, but {noun} is {}",
                shown(max),
                shown(v)
            )),
            Some(_) => {}
        }
    }
    for (res, ratio) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let (Some(max_ratio), Some(l), Some(r)) = (
            q(ratio),
            limits.get(res).and_then(q),
            requests.get(res).and_then(q),
        ) else {
            continue;
        };
        if r.0 > 0 && l.0 * 1000 > max_ratio.0 * r.0 {
            errs.push(format!(
                "{res} max limit to request ratio per {what} is {}, but provided ratio is {:.6}",
                shown(ratio),
                l.0 as f64 / r.0 as f64
            ));
        }
    }
}

fn sum_into(total: &mut Map<String, Value>, add: &Value) {
    for (k, v) in add.as_object().into_iter().flatten() {
        let Some(x) = q(v) else { continue };
        let cur = total.get(k).and_then(q).unwrap_or_default();
        total.insert(k.clone(), json!((cur + x).to_string()));
    }
}

/// The violations of `ranges` by `obj` (a Pod or a PersistentVolumeClaim), in upstream's words.
pub fn violations(ranges: &[Value], kind: &str, obj: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    for lr in ranges {
        for item in lr["spec"]["limits"].as_array().into_iter().flatten() {
            match (kind, item["type"].as_str()) {
                ("Pod", Some("Container")) => {
                    for key in ["initContainers", "containers"] {
                        for c in obj["spec"][key].as_array().into_iter().flatten() {
                            let r = c["resources"]["requests"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default();
                            let l = c["resources"]["limits"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default();
                            check_item(item, "Container", &r, &l, &mut errs);
                        }
                    }
                }
                ("Pod", Some("Pod")) => {
                    let (mut r, mut l) = (Map::new(), Map::new());
                    for c in obj["spec"]["containers"].as_array().into_iter().flatten() {
                        sum_into(&mut r, &c["resources"]["requests"]);
                        sum_into(&mut l, &c["resources"]["limits"]);
                    }
                    check_item(item, "Pod", &r, &l, &mut errs);
                }
                ("PersistentVolumeClaim", Some("PersistentVolumeClaim")) => {
                    let r = obj["spec"]["resources"]["requests"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    let l = obj["spec"]["resources"]["limits"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    check_item(item, "PersistentVolumeClaim", &r, &l, &mut errs);
                }
                _ => {}
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        let mut lr = json!({"spec": {"limits": [
            {"type": "Pod", "max": {"cpu": "1", "memory": "1Gi"}},
            {"type": "Container", "min": {"cpu": "50m", "memory": "5Mi"},
             "max": {"cpu": "1", "memory": "1Gi"},
             "default": {"cpu": "200m", "memory": "100Mi"},
             "defaultRequest": {"cpu": "100m", "memory": "10Mi"},
             "maxLimitRequestRatio": {"cpu": "4", "memory": "10"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]}});
        default_limit_range(&mut lr);
        lr
    }

    #[test]
    fn defaults_the_book_example() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "resources": {"limits": {"cpu": "300m"}, "requests": {"cpu": "300m"}}}]}});
        default_pod(&[range()], &mut pod);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu": "200m", "memory": "100Mi"}));
        assert_eq!(a["requests"], json!({"cpu": "100m", "memory": "10Mi"}));
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"]["cpu"], "300m", "own limit kept");
        assert_eq!(
            b["requests"]["cpu"], "300m",
            "request from its own limit first"
        );
        assert!(
            violations(&[range()], "Pod", &pod).is_empty(),
            "{:?}",
            violations(&[range()], "Pod", &pod)
        );
    }

    #[test]
    fn violations_in_upstreams_words() {
        let pod = json!({"spec": {"containers": [{"name": "big", "resources": {
            "requests": {"cpu": "10m", "memory": "100Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}}]}});
        let errs = violations(&[range()], "Pod", &pod);
        for want in [
            "maximum cpu usage per Pod is 1, but limit is 2",
            "maximum memory usage per Pod is 1Gi, but limit is 2Gi",
            "minimum cpu usage per Container is 50m, but request is 10m",
            "maximum cpu usage per Container is 1, but limit is 2",
            "cpu max limit to request ratio per Container is 4, but provided ratio is 200.000000",
            "memory max limit to request ratio per Container is 10, but provided ratio is 20.480000",
        ] {
            assert!(errs.iter().any(|e| e == want), "missing {want:?} in {errs:#?}");
        }
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "20Gi"}}}});
        assert_eq!(
            violations(&[range()], "PersistentVolumeClaim", &pvc),
            vec![
                "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
                    .to_string()
            ]
        );
        let lr = range();
        assert_eq!(
            lr["spec"]["limits"][2]["default"],
            Value::Null,
            "only Container items get defaults"
        );
    }
}
