//! TokenRequest (`POST serviceaccounts/{name}/token`), as upstream's token REST storage:
//! defaults and validates the spec, resolves the bound object, signs the token.

use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use super::sa_token::{Claims, KubeClaims, Ref};
use super::{lookup, Authenticator};
use crate::auth::user::SERVICE_ACCOUNT_PREFIX;
use crate::status::{ApiError, Cause};

/// `spec.expirationSeconds` when unset.
pub const DEFAULT_EXPIRATION_SECS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (upstream: 10 minutes).
pub const MIN_EXPIRATION_SECS: i64 = 600;
/// Longer requests are shortened to this (upstream's `--service-account-max-token-expiration`).
pub const MAX_EXPIRATION_SECS: i64 = 48 * 3600;
/// Larger values are invalid (upstream: 2^32 seconds).
const LIMIT_EXPIRATION_SECS: i64 = 1 << 32;

fn invalid(causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        kind: "TokenRequest".into(),
        name: String::new(),
        causes,
    }
}

fn cause(field: &str, value: impl std::fmt::Display, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {value}: {why}"),
        field: field.into(),
    }
}

fn store_err(e: kennel_store::StoreError, plural: &str, name: &str) -> ApiError {
    ApiError::from_store(e, plural, name)
}

/// Serves one TokenRequest for ServiceAccount `ns/name`.
pub async fn serve(
    authn: &Authenticator,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let store = authn.store.as_ref();
    let sa = lookup::get(store, "serviceaccounts", Some(ns), name)
        .await
        .map_err(|e| store_err(e, "serviceaccounts", name))?
        .ok_or_else(|| ApiError::NotFound {
            resource: "serviceaccounts".into(),
            name: name.into(),
        })?;
    let spec = &body["spec"];
    let mut causes = Vec::new();
    let audiences: Vec<String> = match &spec["audiences"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    causes.push(cause(
                        &format!("spec.audiences[{i}]"),
                        v,
                        "must be a string",
                    ));
                    None
                }
            })
            .collect(),
        other => {
            causes.push(cause("spec.audiences", other, "must be a list of strings"));
            Vec::new()
        }
    };
    let audiences = if audiences.is_empty() {
        authn.api_audiences().to_vec()
    } else {
        audiences
    };
    let mut secs = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECS,
        v => match v.as_i64() {
            Some(s) if s < MIN_EXPIRATION_SECS => {
                causes.push(cause(
                    "spec.expirationSeconds",
                    s,
                    "may not specify a duration less than 10 minutes",
                ));
                s
            }
            Some(s) if s > LIMIT_EXPIRATION_SECS => {
                causes.push(cause(
                    "spec.expirationSeconds",
                    s,
                    "may not specify a duration larger than 2^32 seconds",
                ));
                s
            }
            Some(s) => s,
            None => {
                causes.push(cause("spec.expirationSeconds", v, "must be an integer"));
                DEFAULT_EXPIRATION_SECS
            }
        },
    };
    let bound = &spec["boundObjectRef"];
    if !bound.is_null() && bound["name"].as_str().unwrap_or("").is_empty() {
        causes.push(Cause::required("spec.boundObjectRef.name"));
    }
    if !causes.is_empty() {
        return Err(invalid(causes));
    }
    secs = secs.min(MAX_EXPIRATION_SECS);

    let mut kube = KubeClaims {
        namespace: ns.to_string(),
        serviceaccount: Ref {
            name: name.to_string(),
            uid: lookup::uid(&sa).to_string(),
        },
        pod: None,
        secret: None,
        node: None,
    };
    if !bound.is_null() {
        bind(store, ns, name, bound, &mut kube).await?;
    }

    let now = Utc::now();
    let iat = now.timestamp();
    let exp = iat + secs;
    // Upstream's `--service-account-extend-token-expiration` (on by default): a pod's token of
    // the admission default lifetime (3607 s) for the API's audiences is valid for a year, while
    // the response still says 3607 s so the node agent refreshes it hourly. A VM keeps the copy
    // it got at container start, so this is what keeps in-guest clients working.
    let extended = kube.pod.is_some()
        && secs == EXTENDABLE_EXPIRATION_SECS
        && audiences.iter().all(|a| authn.api_audiences().contains(a));
    let token_exp = if extended {
        iat + EXTENDED_EXPIRATION_SECS
    } else {
        exp
    };
    let claims = Claims {
        aud: audiences.clone(),
        exp: token_exp,
        iat,
        iss: authn.issuer().to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: iat,
        sub: format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}"),
        kubernetes: kube,
    };
    let token = authn
        .issue(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let rfc = |t: i64| {
        Utc.timestamp_opt(t, 0)
            .single()
            .unwrap_or(now)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": secs});
    if !bound.is_null() {
        out_spec["boundObjectRef"] = bound.clone();
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": rfc(iat)},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": rfc(exp)},
    }))
}

/// The lifetime ServiceAccount admission asks for (`WarnOnlyBoundTokenExpirationSeconds`).
pub const EXTENDABLE_EXPIRATION_SECS: i64 = 3607;
/// What such a pod-bound token is extended to (`ExpirationExtensionSeconds`, one year).
pub const EXTENDED_EXPIRATION_SECS: i64 = 365 * 24 * 3600;

/// Resolves `spec.boundObjectRef` (Pod, Secret or Node) into the token's claims.
async fn bind(
    store: &dyn kennel_store::Store,
    ns: &str,
    sa_name: &str,
    bound: &Value,
    kube: &mut KubeClaims,
) -> Result<(), ApiError> {
    let kind = bound["kind"].as_str().unwrap_or("");
    let api_version = bound["apiVersion"].as_str().unwrap_or("v1");
    let name = bound["name"].as_str().unwrap_or("");
    let (plural, namespaced) = match (api_version, kind) {
        ("v1", "Pod") => ("pods", true),
        ("v1", "Secret") => ("secrets", true),
        ("v1", "Node") => ("nodes", false),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "cannot bind token to object of type {api_version}, Kind={kind}"
            )))
        }
    };
    let obj = lookup::get(store, plural, namespaced.then_some(ns), name)
        .await
        .map_err(|e| store_err(e, plural, name))?
        .ok_or_else(|| ApiError::NotFound {
            resource: plural.into(),
            name: name.into(),
        })?;
    let uid = lookup::uid(&obj).to_string();
    if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiError::Conflict {
                resource: kind.into(),
                name: name.into(),
                message: format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            });
        }
    }
    let r = Ref {
        name: name.to_string(),
        uid,
    };
    match plural {
        "pods" => {
            let pod_sa = obj["spec"]["serviceAccountName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::BadRequest(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            if let Some(node) = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                if let Some(n) = lookup::get(store, "nodes", None, node)
                    .await
                    .map_err(|e| store_err(e, "nodes", node))?
                {
                    kube.node = Some(Ref {
                        name: node.to_string(),
                        uid: lookup::uid(&n).to_string(),
                    });
                }
            }
            kube.pod = Some(r);
        }
        "secrets" => kube.secret = Some(r),
        _ => kube.node = Some(r),
    }
    Ok(())
}
