//! The create-only review resources and the TokenRequest subresource: routed here from the server
//! with the requester's identity.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::handlers::{json_response, ApiState};
use crate::request::Target;
use crate::status::ApiError;

/// Whether `t` with `method` is a review create or a TokenRequest.
pub fn handles(t: &Target, method: &axum::http::Method) -> bool {
    method == axum::http::Method::POST
        && ((t.def.is_review() && t.name.is_none() && t.sub.is_none())
            || (t.def.plural == "serviceaccounts"
                && t.def.group.is_empty()
                && t.name.is_some()
                && t.sub.as_deref() == Some("token")))
}

/// Serves one review or TokenRequest.
pub async fn handle(state: &ApiState, t: &Target, headers: &HeaderMap, body: &[u8]) -> Response {
    match serve(state, t, headers, body).await {
        Ok(v) => json_response(StatusCode::CREATED, &v, &[]),
        Err(e) => e.into_response(),
    }
}

async fn serve(
    state: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let body: Value = crate::request::parse_body(headers, body)?;
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be an object".into(),
        ));
    }
    let user = super::current_user().unwrap_or_else(super::filter::unauthenticated_admin);
    let authn = || {
        state
            .authn
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("authentication is disabled on this server".into()))
    };
    match (t.def.group, t.def.plural) {
        ("", "serviceaccounts") => {
            let ns = t.namespace.as_deref().unwrap_or("default");
            let name = t.name.as_deref().unwrap_or("");
            super::authn::token_request(authn()?, ns, name, &body).await
        }
        ("authentication.k8s.io", "tokenreviews") => {
            super::authn::token_review(authn()?, &body).await
        }
        ("authentication.k8s.io", "selfsubjectreviews") => Ok(json!({
            "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": crate::defaults::now_rfc3339()},
            "status": {"userInfo": user},
        })),
        ("authorization.k8s.io", _) => match state.authz.as_deref() {
            Some(z) => {
                z.access_review(&user, t.def, t.namespace.as_deref(), &body)
                    .await
            }
            None => Err(ApiError::BadRequest(
                "authorization is disabled on this server".into(),
            )),
        },
        _ => Err(ApiError::MethodNotAllowed),
    }
}
