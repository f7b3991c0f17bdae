//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-*` headers replace
//! the requester's identity when the requester may `impersonate` each requested attribute.

use axum::http::HeaderMap;

use super::authz::{Authorizer, Decision};
use super::user::{ANONYMOUS, SERVICE_ACCOUNTS, UNAUTHENTICATED};
use super::{Attributes, UserInfo};
use crate::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Applies the impersonation headers of a request by `user`; the user itself when there are none.
pub async fn apply(
    z: &Authorizer,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let as_user = values(USER).into_iter().next();
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next();
    let mut extra: Vec<(String, String)> = Vec::new();
    for (name, v) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            if let Ok(v) = v.to_str() {
                extra.push((unescape(key), v.to_string()));
            }
        }
    }
    let Some(as_user) = as_user else {
        if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
            return Err(ApiError::Internal(format!(
                "requested impersonation of groups {groups:?}, uid {uid:?} or extra without impersonating a user"
            )));
        }
        return Ok(user);
    };
    let sa = UserInfo {
        name: as_user.clone(),
        ..Default::default()
    };
    let user_check = match sa.service_account() {
        Some((ns, name)) => attrs(&user, "", "serviceaccounts", ns, name),
        None => attrs(&user, "", "users", "", &as_user),
    };
    allowed(z, user_check).await?;
    for g in &groups {
        allowed(z, attrs(&user, "", "groups", "", g)).await?;
    }
    if let Some(uid) = &uid {
        allowed(z, attrs(&user, "authentication.k8s.io", "uids", "", uid)).await?;
    }
    for (k, v) in &extra {
        let mut a = attrs(&user, "authentication.k8s.io", "userextras", "", v);
        a.subresource = k.clone();
        allowed(z, a).await?;
    }
    let mut out = UserInfo {
        name: as_user,
        uid: uid.unwrap_or_default(),
        groups,
        ..Default::default()
    };
    for (k, v) in extra {
        out.extra.entry(k).or_default().push(v);
    }
    if let Some((ns, _)) = out
        .service_account()
        .map(|(n, m)| (n.to_string(), m.to_string()))
    {
        if out.groups.is_empty() {
            out.groups = vec![SERVICE_ACCOUNTS.into(), format!("{SERVICE_ACCOUNTS}:{ns}")];
        }
    }
    if out.name == ANONYMOUS {
        if !out.in_group(UNAUTHENTICATED) {
            out.groups.push(UNAUTHENTICATED.into());
        }
    } else {
        out.ensure_authenticated();
    }
    Ok(out)
}

fn attrs(user: &UserInfo, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

async fn allowed(z: &Authorizer, a: Attributes) -> Result<(), ApiError> {
    match z.authorize(&a).await {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(r) | Decision::NoOpinion(r) => {
            Err(ApiError::Forbidden(super::filter::forbidden_text(&a, &r)))
        }
    }
}

/// Percent-decoding of an extra key (`Impersonate-Extra-` keys are percent-encoded).
fn unescape(key: &str) -> String {
    crate::request::parse_query(Some(&format!("k={key}")))
        .remove("k")
        .unwrap_or_else(|| key.to_string())
        .to_ascii_lowercase()
}
