//! The protobuf form of `/openapi/v2` (gnostic `openapi.v2.Document`), which kubectl ≤ 1.27
//! requires: per resource, a PATCH operation tagged with `x-kubernetes-group-version-kind` that
//! lists the `fieldValidation` query parameter, so kubectl uses server-side field validation.

use super::registry::{ResourceDef, RESOURCES};

/// Minimal protobuf writer (proto3 wire format: varints and length-delimited fields).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) -> &mut Self {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }

    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

fn query_param(name: &str) -> Msg {
    // QueryParameterSubSchema { in = 2, name = 4, type = 6 }
    let mut q = Msg::default();
    q.str(2, "query").str(4, name).str(6, "string");
    // NonBodyParameter { query_parameter_sub_schema = 3 }
    let mut nb = Msg::default();
    nb.msg(3, &q);
    // Parameter { non_body_parameter = 2 }
    let mut p = Msg::default();
    p.msg(2, &nb);
    // ParametersItem { parameter = 1 }
    let mut item = Msg::default();
    item.msg(1, &p);
    item
}

fn operation(r: &ResourceDef, verb: &str) -> Msg {
    let mut op = Msg::default();
    op.str(5, &format!("{verb}{}", r.kind));
    for name in ["dryRun", "fieldManager", "fieldValidation"] {
        op.msg(8, &query_param(name));
    }
    // Any { yaml = 2 }
    let mut any = Msg::default();
    any.str(
        2,
        &format!(
            "group: \"{}\"\nkind: {}\nversion: {}\n",
            r.group, r.kind, r.version
        ),
    );
    // NamedAny { name = 1, value = 2 }
    let mut ext = Msg::default();
    ext.str(1, "x-kubernetes-group-version-kind").msg(2, &any);
    op.msg(13, &ext);
    op
}

/// Encodes the document.
pub fn document(kube_version: &str) -> Vec<u8> {
    let mut paths = Msg::default();
    for r in RESOURCES {
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        // PathItem { put = 3, patch = 8 }
        let mut item = Msg::default();
        item.msg(3, &operation(r, "replace"))
            .msg(8, &operation(r, "patch"));
        // NamedPathItem { name = 1, value = 2 }
        let mut named = Msg::default();
        named.str(1, &path).msg(2, &item);
        paths.msg(2, &named);
    }
    let mut info = Msg::default();
    info.str(1, "Kubernetes").str(2, kube_version);
    let mut doc = Msg::default();
    doc.str(1, "2.0").msg(2, &info).msg(8, &paths);
    doc.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_varints_and_fields() {
        let mut m = Msg::default();
        m.varint(300);
        assert_eq!(m.0, vec![0xac, 0x02]);
        let doc = document("v1.33.0");
        assert_eq!(&doc[..5], &[0x0a, 0x03, b'2', b'.', b'0']);
        let text = String::from_utf8_lossy(&doc);
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains("/apis/apps/v1/namespaces/{namespace}/deployments/{name}"));
    }
}
