//! Server-side `Table` output (what `kubectl get` prints) with the usual columns per kind.

use serde_json::{json, Value};

/// A column: name, type, priority (1 = shown with `-o wide`).
type Col = (&'static str, &'static str, u8);

fn columns(kind: &str) -> Vec<Col> {
    let mut c: Vec<Col> = vec![("Name", "string", 0)];
    c.extend(match kind {
        "Pod" => vec![
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Deployment" => vec![
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "StatefulSet" => vec![
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "DaemonSet" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
        ],
        "Service" => vec![
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Endpoints" => vec![("Endpoints", "string", 0), ("Age", "string", 0)],
        "EndpointSlice" => vec![
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "Node" => vec![
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "PersistentVolume" => vec![
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "PersistentVolumeClaim" => vec![
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "ConfigMap" => vec![("Data", "integer", 0), ("Age", "string", 0)],
        "Secret" => vec![
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Event" => {
            return vec![
                ("Last Seen", "string", 0),
                ("Type", "string", 0),
                ("Reason", "string", 0),
                ("Object", "string", 0),
                ("Message", "string", 0),
            ]
        }
        "HorizontalPodAutoscaler" => vec![
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "string", 0),
            ("Replicas", "string", 0),
            ("Age", "string", 0),
        ],
        "Namespace" => vec![("Status", "string", 0), ("Age", "string", 0)],
        "PodDisruptionBudget" => vec![
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        "Ingress" => vec![
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        "IngressClass" => vec![
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            ("Age", "string", 0),
        ],
        "Lease" => vec![("Holder", "string", 0), ("Age", "string", 0)],
        "CronJob" => vec![
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
        ],
        "StorageClass" => vec![
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "boolean", 0),
            ("Age", "string", 0),
        ],
        "ServiceAccount" => vec![("Secrets", "integer", 0), ("Age", "string", 0)],
        "Role" | "ClusterRole" => vec![("Created At", "string", 0)],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        "Job" => vec![
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
        ],
        _ => vec![("Age", "string", 0)],
    });
    c
}

/// Kubernetes' short human duration (`5s`, `3m2s`, `4h`, `2d`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if s < 600 => format!("{}m{}s", s / 60, s % 60),
        _ if s < 3 * 3600 => format!("{}m", s / 60),
        _ if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ if s < 48 * 3600 => format!("{}h", s / 3600),
        _ if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str() else {
        return "<unknown>".into();
    };
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<invalid>".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn joined(list: &Value, f: impl Fn(&Value) -> String) -> String {
    list.as_array()
        .map(|l| l.iter().map(f).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn selector_text(sel: &Value) -> String {
    super::selectors::LabelSelector::from_any(sel).render()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let age_v = json!(age(&o["metadata"]["creationTimestamp"]));
    let spec = &o["spec"];
    let st = &o["status"];
    let tpl_containers = &spec["template"]["spec"]["containers"];
    if kind == "Event" {
        let last = if o["lastTimestamp"].is_null() {
            &o["eventTime"]
        } else {
            &o["lastTimestamp"]
        };
        // core/v1 names first, events.k8s.io/v1 names as the fallback.
        let io = if o["involvedObject"].is_null() {
            &o["regarding"]
        } else {
            &o["involvedObject"]
        };
        let msg = if o["message"].is_null() {
            &o["note"]
        } else {
            &o["message"]
        };
        let kind_l = s(&io["kind"]).to_lowercase();
        return vec![
            json!(age(last)),
            json!(s(&o["type"])),
            json!(s(&o["reason"])),
            json!(format!("{kind_l}/{}", s(&io["name"]))),
            json!(s(msg)),
        ];
    }
    let default_class = kind == "StorageClass" && {
        let a = &o["metadata"]["annotations"];
        a["storageclass.kubernetes.io/is-default-class"] == "true"
            || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
    };
    let name = if default_class {
        json!(format!("{} (default)", s(&o["metadata"]["name"])))
    } else {
        name
    };
    let mut c = vec![name];
    c.extend(match kind {
        "Pod" => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = st["containerStatuses"].as_array();
            let ready = statuses.map_or(0, |l| l.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 =
                statuses.map_or(0, |l| l.iter().map(|c| int(&c["restartCount"])).sum());
            let mut phase = s(&st["phase"]);
            if let Some(r) = st["reason"].as_str() {
                phase = r.to_string();
            }
            for cs in statuses.into_iter().flatten() {
                if let Some(r) = cs["state"]["waiting"]["reason"].as_str() {
                    phase = r.to_string();
                } else if let Some(r) = cs["state"]["terminated"]["reason"].as_str() {
                    phase = r.to_string();
                }
            }
            if !o["metadata"]["deletionTimestamp"].is_null() {
                phase = "Terminating".into();
            }
            vec![
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts.to_string()),
                age_v,
                json!(or_none(s(&st["podIP"]))),
                json!(or_none(s(&spec["nodeName"]))),
                json!(or_none(s(&st["nominatedNodeName"]))),
                json!("<none>"),
            ]
        }
        "Deployment" => vec![
            json!(format!(
                "{}/{}",
                int(&st["readyReplicas"]),
                int(&spec["replicas"])
            )),
            json!(int(&st["updatedReplicas"])),
            json!(int(&st["availableReplicas"])),
            age_v,
            json!(joined(tpl_containers, |c| s(&c["name"]))),
            json!(joined(tpl_containers, |c| s(&c["image"]))),
            json!(selector_text(&spec["selector"])),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            json!(int(&spec["replicas"])),
            json!(int(&st["replicas"])),
            json!(int(&st["readyReplicas"])),
            age_v,
            json!(joined(tpl_containers, |c| s(&c["name"]))),
            json!(joined(tpl_containers, |c| s(&c["image"]))),
            json!(selector_text(&spec["selector"])),
        ],
        "StatefulSet" => vec![
            json!(format!(
                "{}/{}",
                int(&st["readyReplicas"]),
                int(&spec["replicas"])
            )),
            age_v,
            json!(joined(tpl_containers, |c| s(&c["name"]))),
            json!(joined(tpl_containers, |c| s(&c["image"]))),
        ],
        "DaemonSet" => vec![
            json!(int(&st["desiredNumberScheduled"])),
            json!(int(&st["currentNumberScheduled"])),
            json!(int(&st["numberReady"])),
            json!(int(&st["updatedNumberScheduled"])),
            json!(int(&st["numberAvailable"])),
            json!(or_none(selector_text(
                &spec["template"]["spec"]["nodeSelector"]
            ))),
            age_v,
        ],
        "Service" => {
            let ports = joined(&spec["ports"], |p| {
                let node = p["nodePort"]
                    .as_i64()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default();
                format!("{}{node}/{}", int(&p["port"]), s(&p["protocol"]))
            });
            let ext = joined(&st["loadBalancer"]["ingress"], |i| s(&i["ip"]));
            let ext = if !ext.is_empty() {
                ext
            } else if spec["type"] == "LoadBalancer" {
                "<pending>".into()
            } else {
                joined(&spec["externalIPs"], s)
            };
            vec![
                json!(s(&spec["type"])),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(or_none(ext)),
                json!(or_none(ports)),
                age_v,
                json!(or_none(selector_text(&spec["selector"]))),
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in o["subsets"].as_array().into_iter().flatten() {
                for a in sub["addresses"].as_array().into_iter().flatten() {
                    for p in sub["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", s(&a["ip"]), int(&p["port"])));
                    }
                }
            }
            vec![json!(or_none(eps.join(","))), age_v]
        }
        "EndpointSlice" => {
            // As upstream's printer: ports and at most three addresses, then "+ N more...".
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| int(&p["port"]).to_string())
                .collect();
            let addrs: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .map(|a| s(&a))
                .collect();
            let mut shown = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
            if addrs.len() > 3 {
                shown.push_str(&format!(" + {} more...", addrs.len() - 3));
            }
            let ports = if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            };
            vec![
                json!(s(&o["addressType"])),
                json!(ports),
                json!(or_none(shown)),
                age_v,
            ]
        }
        "Node" => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if spec["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect();
            let addr = |t: &str| {
                st["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map(|a| s(&a["address"]))
                    .unwrap_or_default()
            };
            let info = &st["nodeInfo"];
            vec![
                json!(status),
                json!(or_none(roles.join(","))),
                age_v,
                json!(s(&info["kubeletVersion"])),
                json!(or_none(addr("InternalIP"))),
                json!(or_none(addr("ExternalIP"))),
                json!(s(&info["osImage"])),
                json!(s(&info["kernelVersion"])),
                json!(s(&info["containerRuntimeVersion"])),
            ]
        }
        "PersistentVolume" => {
            let claim = &spec["claimRef"];
            let claim = if claim.is_null() {
                String::new()
            } else {
                format!("{}/{}", s(&claim["namespace"]), s(&claim["name"]))
            };
            vec![
                json!(s(&spec["capacity"]["storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(s(&spec["persistentVolumeReclaimPolicy"])),
                json!(storage_phase(o)),
                json!(claim),
                json!(storage_class_of(o)),
                json!(unset(&spec["volumeAttributesClassName"])),
                json!(s(&st["reason"])),
                age_v,
                json!(unset(&spec["volumeMode"])),
            ]
        }
        "PersistentVolumeClaim" => {
            let bound = !s(&spec["volumeName"]).is_empty();
            vec![
                json!(storage_phase(o)),
                json!(s(&spec["volumeName"])),
                json!(if bound {
                    s(&st["capacity"]["storage"])
                } else {
                    String::new()
                }),
                json!(if bound {
                    access_modes(&st["accessModes"])
                } else {
                    String::new()
                }),
                json!(storage_class_of(o)),
                json!(unset(&spec["volumeAttributesClassName"])),
                age_v,
                json!(unset(&spec["volumeMode"])),
            ]
        }
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![json!(n), age_v]
        }
        "Secret" => vec![
            json!(s(&o["type"])),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            age_v,
        ],
        "HorizontalPodAutoscaler" => {
            let r = &spec["scaleTargetRef"];
            vec![
                json!(format!("{}/{}", s(&r["kind"]), s(&r["name"]))),
                json!(hpa_targets(&spec["metrics"], &st["currentMetrics"])),
                json!(spec["minReplicas"].as_i64().unwrap_or(1).to_string()),
                json!(int(&spec["maxReplicas"]).to_string()),
                json!(int(&st["currentReplicas"]).to_string()),
                age_v,
            ]
        }
        "Namespace" => vec![json!(s(&st["phase"])), age_v],
        "PodDisruptionBudget" => {
            let n = |v: &Value| if v.is_null() { "N/A".to_string() } else { s(v) };
            vec![
                json!(n(&spec["minAvailable"])),
                json!(n(&spec["maxUnavailable"])),
                json!(int(&st["disruptionsAllowed"])),
                age_v,
            ]
        }
        "Ingress" => {
            let hosts = joined(&spec["rules"], |r| s(&r["host"]));
            let addr = joined(&st["loadBalancer"]["ingress"], |i| {
                if i["ip"].is_null() {
                    s(&i["hostname"])
                } else {
                    s(&i["ip"])
                }
            });
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            vec![
                json!(or_none(s(&spec["ingressClassName"]))),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts
                }),
                json!(addr),
                json!(ports),
                age_v,
            ]
        }
        "IngressClass" => {
            let p = &spec["parameters"];
            let params = if p.is_null() {
                "<none>".to_string()
            } else {
                format!("{}/{}", s(&p["kind"]), s(&p["name"]))
            };
            vec![json!(s(&spec["controller"])), json!(params), age_v]
        }
        "Lease" => vec![json!(s(&spec["holderIdentity"])), age_v],
        "CronJob" => vec![
            json!(s(&spec["schedule"])),
            json!(or_none(s(&spec["timeZone"]))),
            json!(spec["suspend"].as_bool().unwrap_or(false)),
            json!(st["active"].as_array().map_or(0, Vec::len)),
            json!(if st["lastScheduleTime"].is_null() {
                "<none>".to_string()
            } else {
                age(&st["lastScheduleTime"])
            }),
            age_v,
        ],
        "StorageClass" => vec![
            json!(s(&o["provisioner"])),
            json!(if o["reclaimPolicy"].is_null() {
                "Delete".to_string()
            } else {
                s(&o["reclaimPolicy"])
            }),
            json!(if o["volumeBindingMode"].is_null() {
                "Immediate".to_string()
            } else {
                s(&o["volumeBindingMode"])
            }),
            json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false)),
            age_v,
        ],
        "ServiceAccount" => vec![json!(o["secrets"].as_array().map_or(0, Vec::len)), age_v],
        "Role" | "ClusterRole" => vec![json!(s(&o["metadata"]["creationTimestamp"]))],
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = |kind: &str| {
                let names: Vec<String> = o["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| x["kind"] == kind)
                    .map(|x| match (kind, x["namespace"].as_str()) {
                        ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s(&x["name"])),
                        _ => s(&x["name"]),
                    })
                    .collect();
                json!(names.join(", "))
            };
            vec![
                json!(format!(
                    "{}/{}",
                    s(&o["roleRef"]["kind"]),
                    s(&o["roleRef"]["name"])
                )),
                age_v,
                subjects("User"),
                subjects("Group"),
                subjects("ServiceAccount"),
            ]
        }
        "Job" => {
            let done = int(&st["succeeded"]);
            let want = spec["completions"].as_i64().unwrap_or(1);
            let status = if done >= want { "Complete" } else { "Running" };
            vec![
                json!(status),
                json!(format!("{done}/{want}")),
                json!(""),
                age_v,
            ]
        }
        _ => vec![age_v],
    });
    c
}

/// A PV's or PVC's phase as kubectl prints it (`Terminating` once deleted).
fn storage_phase(o: &Value) -> String {
    if o["metadata"]["deletionTimestamp"].is_null() {
        s(&o["status"]["phase"])
    } else {
        "Terminating".into()
    }
}

/// The class of a PV or PVC: the beta annotation first, then `storageClassName`.
fn storage_class_of(o: &Value) -> String {
    match o["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].as_str() {
        Some(c) => c.to_string(),
        None => s(&o["spec"]["storageClassName"]),
    }
}

fn unset(v: &Value) -> String {
    match v.as_str() {
        Some(x) => x.to_string(),
        None => "<unset>".into(),
    }
}

fn access_modes(v: &Value) -> String {
    joined(v, |m| {
        match m.as_str().unwrap_or("") {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        }
        .to_string()
    })
}

/// A custom resource's columns: Name, then its `additionalPrinterColumns` (Age when it has
/// none, as upstream's CRD defaulting adds).
fn custom_columns(served: &crate::crd::Served) -> Vec<crate::crd::columns::Column> {
    let mut cols = served.columns.clone();
    if cols.is_empty() {
        cols.push(crate::crd::columns::Column {
            name: "Age".into(),
            ty: "date".into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
    }
    cols
}

fn custom_table(
    served: &crate::crd::Served,
    objects: &[Value],
    list_meta: Value,
    with_columns: bool,
    full_objects: bool,
) -> Value {
    let cols = custom_columns(served);
    let defs: Vec<Value> = if with_columns {
        std::iter::once(json!({"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}))
            .chain(cols.iter().map(|c| {
                json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority})
            }))
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![json!(s(&o["metadata"]["name"]))];
            cells.extend(cols.iter().map(|c| crate::crd::columns::cell(c, o)));
            json!({"cells": cells, "object": row_object(o, full_objects)})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": defs, "rows": rows})
}

fn row_object(o: &Value, full_objects: bool) -> Value {
    if full_objects {
        o.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
    }
}

/// Builds a `meta.k8s.io/v1` Table for `objects` of `def`; `full_objects` embeds whole objects
/// (`includeObject=Object`), otherwise `PartialObjectMetadata`.
pub fn to_table(
    def: &crate::registry::ResourceDef,
    objects: &[Value],
    list_meta: Value,
    with_columns: bool,
    full_objects: bool,
) -> Value {
    if let Some(served) = crate::crd::served(def) {
        return custom_table(&served, objects, list_meta, with_columns, full_objects);
    }
    let kind = def.kind;
    let cols: Vec<Value> = if with_columns {
        columns(kind)
            .iter()
            .map(|(n, t, p)| {
                json!({"name": n, "type": t, "format": if *n == "Name" { "name" } else { "" }, "description": "", "priority": p})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(kind, o), "object": row_object(o, full_objects)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": cols,
        "rows": rows,
    })
}

/// The Targets column of an HPA as kubectl prints it (`cpu: 45%/50%`, `memory: 10Mi/50Mi`,
/// `<unknown>` for a metric not measured yet; beyond two metrics `+ N more...`).
fn hpa_targets(metrics: &Value, current: &Value) -> String {
    let specs = metrics.as_array().cloned().unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let cur = current.as_array().cloned().unwrap_or_default();
    let mut parts = Vec::new();
    for m in specs.iter().take(2) {
        let ty = m["type"].as_str().unwrap_or("");
        let key = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => "",
        };
        let src = &m[key];
        let name = src["name"]
            .as_str()
            .or_else(|| src["metric"]["name"].as_str())
            .unwrap_or("")
            .to_string();
        let now = cur
            .iter()
            .find(|c| {
                c["type"] == ty
                    && c[key]["name"]
                        .as_str()
                        .or_else(|| c[key]["metric"]["name"].as_str())
                        == Some(name.as_str())
            })
            .map(|c| c[key]["current"].clone())
            .unwrap_or(Value::Null);
        let target = &src["target"];
        let text = if let Some(u) = target["averageUtilization"].as_i64() {
            let c = now["averageUtilization"]
                .as_i64()
                .map_or("<unknown>".to_string(), |c| format!("{c}%"));
            format!("{c}/{u}%")
        } else {
            let want = target["averageValue"]
                .as_str()
                .or_else(|| target["value"].as_str())
                .unwrap_or("");
            let c = now["averageValue"]
                .as_str()
                .or_else(|| now["value"].as_str())
                .unwrap_or("<unknown>");
            format!("{c}/{want}")
        };
        parts.push(if ty == "Resource" || ty == "ContainerResource" {
            format!("{name}: {text}")
        } else {
            text
        });
    }
    let mut out = parts.join(", ");
    if specs.len() > 2 {
        out.push_str(&format!(" + {} more...", specs.len() - 2));
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::now_rfc3339;

    #[test]
    fn hpa_targets_as_kubectl_prints_them() {
        let metrics = json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "50Mi"}}},
        ]);
        assert_eq!(
            hpa_targets(&metrics, &Value::Null),
            "cpu: <unknown>/50%, memory: <unknown>/50Mi"
        );
        let current = json!([
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "45m"}}},
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "10Mi"}}},
        ]);
        assert_eq!(
            hpa_targets(&metrics, &current),
            "cpu: 45%/50%, memory: 10Mi/50Mi"
        );
        assert_eq!(hpa_targets(&Value::Null, &current), "<none>");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(5 * 3600 + 60), "5h1m");
        assert_eq!(human_duration(10 * 86400), "10d");
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": now_rfc3339()}, "spec": {"containers": [{"name": "a"}], "nodeName": "n1"}, "status": {"phase": "Pending"}});
        let t = to_table(
            crate::registry::find("", "v1", "pods").unwrap(),
            &[pod],
            json!({}),
            true,
            false,
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "p");
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "Pending");
        assert_eq!(cells[6], "n1");
    }

    #[test]
    fn service_row() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let t = to_table(
            crate::registry::find("", "v1", "services").unwrap(),
            &[svc],
            json!({}),
            true,
            false,
        );
        assert_eq!(t["rows"][0]["cells"][4], "80/TCP");
        assert_eq!(t["rows"][0]["cells"][6], "app=web");
    }
}
