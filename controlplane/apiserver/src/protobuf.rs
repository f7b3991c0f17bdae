//! Decoding of Kubernetes protobuf request bodies (`k8s\0` + `runtime.Unknown`) into JSON, using
//! the field tables in [`super::protobuf_schema`]. Responses are always JSON (clients accept it).

use base64::Engine;
use serde_json::{json, Map, Value};

use super::protobuf_schema::MESSAGES;

/// A field type in the tables.
#[derive(Debug, Clone, Copy)]
pub enum T {
    /// string
    S,
    /// integer (int32/int64)
    I,
    /// bool
    B,
    /// double/float
    D,
    /// bytes (JSON: base64)
    Y,
    /// embedded message
    M(&'static str),
    /// map<string, string>
    MapS,
    /// map<string, bytes>
    MapY,
    /// map<string, message>
    MapM(&'static str),
}

/// One field: tag, JSON name, type, repeated.
#[derive(Debug, Clone, Copy)]
pub struct F(pub u32, pub &'static str, pub T, pub bool);

/// Errors decoding a protobuf body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    /// The body lacks the `k8s\0` prefix.
    #[error("protobuf body does not start with the k8s magic prefix")]
    Magic,
    /// The wire data ended early or is malformed.
    #[error("malformed protobuf data in {0}")]
    Malformed(String),
    /// The kind is not one this server decodes from protobuf.
    #[error("protobuf bodies are not supported for {0}; send JSON")]
    UnsupportedKind(String),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self) -> ProtobufError {
        ProtobufError::Malformed(self.what.to_string())
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.err())?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.err())?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| self.err())?;
        self.pos = end;
        Ok(s)
    }

    /// Next `(tag, wire type, payload)`; varints come back as their value in `u64`.
    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtobufError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = (key >> 3) as u32;
        let w = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| self.err())?,
            )),
            2 => {
                let n = self.varint()? as usize;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| self.err())?,
            )),
            _ => return Err(self.err()),
        };
        Ok(Some((tag, w)))
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Messages the generated table lacks: the DeleteOptions body of a protobuf DELETE.
static EXTRA: &[(&str, &[F])] = &[
    (
        "meta/v1.DeleteOptions",
        &[
            F(1, "gracePeriodSeconds", T::I, false),
            F(2, "preconditions", T::M("meta/v1.Preconditions"), false),
            F(3, "orphanDependents", T::B, false),
            F(4, "propagationPolicy", T::S, false),
            F(5, "dryRun", T::S, true),
        ],
    ),
    (
        "meta/v1.Preconditions",
        &[
            F(1, "uid", T::S, false),
            F(2, "resourceVersion", T::S, false),
        ],
    ),
];

fn schema(name: &str) -> Option<&'static [F]> {
    MESSAGES
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| MESSAGES[i].1)
        .or_else(|| EXTRA.iter().find(|(n, _)| *n == name).map(|(_, f)| *f))
}

/// Names of the map fields (labels, annotations, data, …): their entries are values as sent,
/// an empty string included, so the zero-value pass must not touch them.
fn map_fields() -> &'static std::collections::HashSet<&'static str> {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| {
        MESSAGES
            .iter()
            .flat_map(|(_, fs)| fs.iter())
            .filter(|f| matches!(f.2, T::MapS | T::MapY | T::MapM(_)))
            .map(|f| f.1)
            .collect()
    })
}

fn fields<'a>(buf: &'a [u8], what: &'a str) -> Result<Vec<(u32, Wire<'a>)>, ProtobufError> {
    let mut r = Reader { buf, pos: 0, what };
    let mut out = Vec::new();
    while let Some(f) = r.field()? {
        out.push(f);
    }
    Ok(out)
}

fn string(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn special(name: &str, buf: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let fs = fields(buf, name)?;
    let int = |tag: u32| {
        fs.iter().find_map(|(t, w)| match w {
            Wire::Varint(v) if *t == tag => Some(*v as i64),
            _ => None,
        })
    };
    let bytes = |tag: u32| {
        fs.iter().find_map(|(t, w)| match w {
            Wire::Bytes(b) if *t == tag => Some(*b),
            _ => None,
        })
    };
    Ok(Some(match name {
        "meta/v1.Time" | "meta/v1.MicroTime" => {
            let secs = int(1).unwrap_or(0);
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
            json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
        "resource.Quantity" => string(bytes(1).unwrap_or_default()),
        // `ExtraValue` (a repeated string) is a plain list in JSON.
        "authorization/v1.ExtraValue" | "authentication/v1.ExtraValue" => Value::Array(
            fs.iter()
                .filter_map(|(t, w)| match w {
                    Wire::Bytes(b) if *t == 1 => Some(string(b)),
                    _ => None,
                })
                .collect(),
        ),
        "intstr.IntOrString" => {
            if int(1) == Some(1) {
                string(bytes(3).unwrap_or_default())
            } else {
                json!(int(2).unwrap_or(0) as i32)
            }
        }
        "meta/v1.Duration" => json!(format!("{}s", int(1).unwrap_or(0) / 1_000_000_000)),
        "runtime.RawExtension" | "meta/v1.FieldsV1" => {
            serde_json::from_slice(bytes(1).unwrap_or(b"{}")).unwrap_or(Value::Null)
        }
        _ => return Ok(None),
    }))
}

fn scalar(t: T, w: &Wire<'_>) -> Option<Value> {
    Some(match (t, w) {
        (T::S, Wire::Bytes(b)) => string(b),
        (T::Y, Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (T::I, Wire::Varint(v)) => json!(*v as i64),
        (T::B, Wire::Varint(v)) => json!(*v != 0),
        (T::D, Wire::Fixed64(v)) => json!(f64::from_bits(*v)),
        (T::D, Wire::Fixed32(v)) => json!(f32::from_bits(*v)),
        _ => return None,
    })
}

/// Decodes one message of type `name` into JSON.
pub fn decode_message(name: &str, buf: &[u8]) -> Result<Value, ProtobufError> {
    if let Some(v) = special(name, buf)? {
        return Ok(v);
    }
    let schema = schema(name).ok_or_else(|| ProtobufError::UnsupportedKind(name.to_string()))?;
    let mut out = Map::new();
    for (tag, w) in fields(buf, name)? {
        let Some(F(_, key, t, repeated)) = schema.iter().find(|f| f.0 == tag).copied() else {
            continue;
        };
        let mut values = Vec::new();
        match (t, &w) {
            (T::M(m), Wire::Bytes(b)) => values.push(decode_message(m, b)?),
            (T::MapS | T::MapY | T::MapM(_), Wire::Bytes(b)) => {
                let mut k = String::new();
                let mut v = Value::Null;
                for (etag, ew) in fields(b, name)? {
                    match (etag, &ew) {
                        (1, Wire::Bytes(kb)) => k = String::from_utf8_lossy(kb).into_owned(),
                        (2, Wire::Bytes(vb)) => {
                            v = match t {
                                T::MapS => string(vb),
                                T::MapY => {
                                    json!(base64::engine::general_purpose::STANDARD.encode(vb))
                                }
                                T::MapM(m) => decode_message(m, vb)?,
                                _ => Value::Null,
                            }
                        }
                        _ => {}
                    }
                }
                let entry = out.entry(key).or_insert_with(|| json!({}));
                entry[k] = if v.is_null() && matches!(t, T::MapS | T::MapY) {
                    json!("")
                } else {
                    v
                };
                continue;
            }
            (T::I | T::B | T::D, Wire::Bytes(b)) if repeated => {
                // packed encoding
                let mut r = Reader {
                    buf: b,
                    pos: 0,
                    what: name,
                };
                while r.pos < b.len() {
                    let v = r.varint()?;
                    values.push(scalar(t, &Wire::Varint(v)).unwrap_or(Value::Null));
                }
            }
            _ => match scalar(t, &w) {
                Some(v) => values.push(v),
                None => return Err(ProtobufError::Malformed(format!("{name}.{key}"))),
            },
        }
        if repeated {
            let arr = out.entry(key).or_insert_with(|| json!([]));
            if let Some(a) = arr.as_array_mut() {
                a.extend(values);
            }
        } else if let Some(v) = values.pop() {
            out.insert(key.to_string(), v);
        }
    }
    Ok(Value::Object(out))
}

/// Fields that are inlined into their parent in JSON (Go `json:",inline"`).
const INLINE: &[&str] = &[
    "ingressRuleValue",
    "volumeSource",
    "persistentVolumeSource",
    "handler",
    "probeHandler",
    "ephemeralContainerCommon",
];
/// Optional (pointer) integer fields where 0 is a real value.
const ZERO_OK: &[&str] = &[
    "gracePeriodSeconds",
    "replicas",
    "parallelism",
    "completions",
    "backoffLimit",
    "backoffLimitPerIndex",
    "activeDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "minReplicas",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "revisionHistoryLimit",
    "ttlSecondsAfterFinished",
    "defaultMode",
    "mode",
    "startingDeadlineSeconds",
    "priority",
    "deletionGracePeriodSeconds",
    "partition",
    "minAvailable",
    "maxUnavailable",
    "maxSurge",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "expirationSeconds",
];
/// Optional (pointer) boolean fields where `false` is a real value.
const FALSE_OK: &[&str] = &[
    "automountServiceAccountToken",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "privileged",
    "readOnlyRootFilesystem",
    "enableServiceLinks",
    "setHostnameAsFQDN",
    "hostUsers",
    "suspend",
    "optional",
    "immutable",
    "shareProcessNamespace",
    "allocateLoadBalancerNodePorts",
];

/// Go's protobuf encoding writes every non-pointer field, so unset fields arrive as zero values;
/// this removes them (as Go's JSON `omitempty` would) and flattens inlined structs.
fn drop_zero_values(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for key in INLINE {
                if let Some(Value::Object(inner)) = m.remove(*key) {
                    for (k, iv) in inner {
                        m.insert(k, iv);
                    }
                }
            }
            m.retain(|k, child| {
                if map_fields().contains(k.as_str()) && child.is_object() {
                    return child.as_object().is_some_and(|o| !o.is_empty());
                }
                drop_zero_values(child);
                match child {
                    Value::String(s) => !s.is_empty() && s != "1970-01-01T00:00:00Z",
                    Value::Bool(b) => *b || FALSE_OK.contains(&k.as_str()),
                    Value::Number(n) => n.as_f64() != Some(0.0) || ZERO_OK.contains(&k.as_str()),
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty() || k == "emptyDir",
                    Value::Null => false,
                }
            });
        }
        Value::Array(a) => a.iter_mut().for_each(drop_zero_values),
        _ => {}
    }
}

fn module_of(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("core/{api_version}"),
        Some((group, version)) => {
            let short = group.split('.').next().unwrap_or(group);
            format!("{short}/{version}")
        }
    }
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into a JSON object.
pub fn decode_body(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtobufError::Magic)?;
    let raw = fields(rest, "runtime.Unknown")?
        .into_iter()
        .find_map(|(t, w)| match w {
            Wire::Bytes(b) if t == 2 => Some(b),
            _ => None,
        })
        .unwrap_or_default();
    let tm = fields(
        fields(rest, "runtime.Unknown")?
            .into_iter()
            .find_map(|(t, w)| match w {
                Wire::Bytes(b) if t == 1 => Some(b),
                _ => None,
            })
            .unwrap_or_default(),
        "runtime.TypeMeta",
    )?;
    let get = |tag: u32| {
        tm.iter()
            .find_map(|(t, w)| match w {
                Wire::Bytes(b) if *t == tag => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let (api_version, kind) = (get(1), get(2));
    // DeleteOptions is registered in every group version; one message serves them all.
    let name = if kind == "DeleteOptions" {
        "meta/v1.DeleteOptions".to_string()
    } else {
        format!("{}.{kind}", module_of(&api_version))
    };
    if schema(&name).is_none() {
        return Err(ProtobufError::UnsupportedKind(format!(
            "{api_version} {kind}"
        )));
    }
    let mut obj = decode_message(&name, raw)?;
    drop_zero_values(&mut obj);
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, data) in fields {
            out.push(((tag << 3) | 2) as u8);
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn tables_are_sorted() {
        assert!(MESSAGES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn decodes_a_configmap() {
        let entry = msg(&[(1, b"a"), (2, b"b")]);
        let labels = msg(&[(1, b"app"), (2, b"web")]);
        let meta = msg(&[(1, b"cm1"), (11, &labels)]);
        let raw = msg(&[(1, &meta), (2, &entry)]);
        let tm = msg(&[(1, b"v1"), (2, b"ConfigMap")]);
        let mut body = b"k8s\0".to_vec();
        body.extend(msg(&[(1, &tm), (2, &raw)]));
        let v = decode_body(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "labels": {"app": "web"}}, "data": {"a": "b"}})
        );
        assert_eq!(decode_body(b"nope"), Err(ProtobufError::Magic));
    }

    #[test]
    fn empty_map_values_are_kept() {
        let empty = msg(&[(1, b"a"), (2, b"")]);
        let meta = msg(&[(1, b"cm1"), (11, &empty)]);
        let entry = msg(&[(1, b"k"), (2, b"")]);
        let raw = msg(&[(1, &meta), (2, &entry)]);
        let tm = msg(&[(1, b"v1"), (2, b"ConfigMap")]);
        let mut body = b"k8s\0".to_vec();
        body.extend(msg(&[(1, &tm), (2, &raw)]));
        let v = decode_body(&body).unwrap();
        assert_eq!(v["metadata"]["labels"], json!({"a": ""}));
        assert_eq!(v["data"], json!({"k": ""}));
    }

    #[test]
    fn decodes_delete_options() {
        // gracePeriodSeconds 0 (a varint field), preconditions.uid, propagationPolicy.
        let pre = msg(&[(1, b"u-1")]);
        let mut raw = vec![(1 << 3) as u8, 0];
        raw.extend(msg(&[(2, &pre), (4, b"Foreground")]));
        let tm = msg(&[(1, b"v1"), (2, b"DeleteOptions")]);
        let mut body = b"k8s\0".to_vec();
        body.extend(msg(&[(1, &tm), (2, &raw)]));
        let v = decode_body(&body).unwrap();
        assert_eq!(v["gracePeriodSeconds"], 0);
        assert_eq!(v["preconditions"]["uid"], "u-1");
        assert_eq!(v["propagationPolicy"], "Foreground");
    }

    #[test]
    fn zero_values_dropped_and_inlines_flattened() {
        let mut v = json!({"spec": {"replicas": 0, "paused": false, "strategy": {"type": ""},
            "template": {"metadata": {"creationTimestamp": "1970-01-01T00:00:00Z"}},
            "volumes": [{"name": "v", "volumeSource": {"emptyDir": {}}}]}});
        drop_zero_values(&mut v);
        assert_eq!(
            v,
            json!({"spec": {"replicas": 0, "volumes": [{"name": "v", "emptyDir": {}}]}})
        );
    }
}
