//! The access reviews of `authorization.k8s.io/v1` (what `kubectl auth can-i` asks):
//! SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview and
//! SelfSubjectRulesReview.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Authorizer, Decision};
use crate::auth::{Attributes, UserInfo};
use crate::registry::ResourceDef;
use crate::status::{ApiError, Cause};

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn invalid(kind: &str, field: &str, msg: &str) -> ApiError {
    ApiError::Invalid {
        kind: kind.into(),
        name: String::new(),
        causes: vec![Cause {
            reason: "FieldValueInvalid",
            message: msg.into(),
            field: field.into(),
        }],
    }
}

/// The attributes a SubjectAccessReviewSpec asks about, for `user`.
fn spec_attributes(kind: &str, spec: &Value, user: UserInfo) -> Result<Attributes, ApiError> {
    let ra = &spec["resourceAttributes"];
    let nra = &spec["nonResourceAttributes"];
    match (ra.is_object(), nra.is_object()) {
        (true, false) => Ok(Attributes {
            user,
            verb: s(ra, "verb"),
            resource_request: true,
            namespace: s(ra, "namespace"),
            api_group: s(ra, "group"),
            api_version: s(ra, "version"),
            resource: s(ra, "resource"),
            subresource: s(ra, "subresource"),
            name: s(ra, "name"),
            ..Default::default()
        }),
        (false, true) => Ok(Attributes {
            user,
            verb: s(nra, "verb"),
            path: s(nra, "path"),
            ..Default::default()
        }),
        (true, true) => Err(invalid(
            kind,
            "spec.nonResourceAttributes",
            "cannot be specified in combination with resourceAttributes",
        )),
        (false, false) => Err(invalid(
            kind,
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// The user a SubjectAccessReviewSpec names.
fn spec_user(kind: &str, spec: &Value) -> Result<UserInfo, ApiError> {
    let name = s(spec, "user");
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            kind,
            "spec.user",
            "at least one of user or group must be specified",
        ));
    }
    let extra: BTreeMap<String, Vec<String>> =
        serde_json::from_value(spec["extra"].clone()).unwrap_or_default();
    Ok(UserInfo {
        name,
        uid: s(spec, "uid"),
        groups,
        extra,
    })
}

fn respond(kind: &str, body: &Value, status: Value) -> Value {
    let mut out = body.clone();
    out["kind"] = json!(kind);
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    if !out["metadata"].is_object() {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = Value::Null;
    out["status"] = status;
    out
}

async fn access(z: &Authorizer, kind: &str, body: &Value, a: &Attributes) -> Value {
    let (allowed, denied, reason) = match z.authorize(a).await {
        Decision::Allow(r) => (true, false, r),
        Decision::Deny(r) => (false, true, r),
        Decision::NoOpinion(r) => (false, false, r),
    };
    let mut status = json!({"allowed": allowed});
    if denied {
        status["denied"] = json!(true);
    }
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    respond(kind, body, status)
}

/// Answers one review create.
pub async fn review(
    z: &Authorizer,
    user: &UserInfo,
    def: &ResourceDef,
    namespace: Option<&str>,
    body: &Value,
) -> Result<Value, ApiError> {
    let spec = &body["spec"];
    match def.plural {
        "selfsubjectaccessreviews" => {
            let kind = "SelfSubjectAccessReview";
            let a = spec_attributes(kind, spec, user.clone())?;
            Ok(access(z, kind, body, &a).await)
        }
        "subjectaccessreviews" => {
            let kind = "SubjectAccessReview";
            let a = spec_attributes(kind, spec, spec_user(kind, spec)?)?;
            Ok(access(z, kind, body, &a).await)
        }
        "localsubjectaccessreviews" => {
            let kind = "LocalSubjectAccessReview";
            let ns = namespace.filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::BadRequest("namespace is required on this type: ".into())
            })?;
            let meta_ns = body["metadata"]["namespace"].as_str().unwrap_or(ns);
            if meta_ns != ns {
                return Err(ApiError::BadRequest(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
            if spec["nonResourceAttributes"].is_object() {
                return Err(invalid(
                    kind,
                    "spec.nonResourceAttributes",
                    "disallowed on this kind of request",
                ));
            }
            let a = spec_attributes(kind, spec, spec_user(kind, spec)?)?;
            if a.namespace != ns {
                return Err(invalid(
                    kind,
                    "spec.resourceAttributes.namespace",
                    "must match metadata.namespace",
                ));
            }
            let mut out = access(z, kind, body, &a).await;
            out["metadata"]["namespace"] = json!(ns);
            Ok(out)
        }
        "selfsubjectrulesreviews" => Ok(rules_review(z, user, body)),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn rules_review(z: &Authorizer, user: &UserInfo, body: &Value) -> Value {
    let ns = s(&body["spec"], "namespace");
    let (rules, mut errors) = z.cache.read().rules_for(user, &ns);
    let mut incomplete = !errors.is_empty();
    if user.in_group(crate::auth::user::NODES) {
        incomplete = true;
        errors.insert(
            0,
            "node authorizer does not support user rule resolution".into(),
        );
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if !r.resources.is_empty() {
            let mut rr =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                rr["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(rr);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    });
    if !errors.is_empty() {
        let text = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        status["evaluationError"] = json!(text);
    }
    respond("SelfSubjectRulesReview", body, status)
}
