//! The request filter every API request passes, in upstream's order: authentication (client
//! certificate, bearer token; none → anonymous), impersonation, authorization, then the handler
//! with the user set (see [`super::current_user`]); an audit event is written at the end.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::authn::Credentials;
use super::authz::{forbidden_message, Decision};
use super::user::{ANONYMOUS, MASTERS};
use super::{audit, impersonate, Attributes, UserInfo};
use crate::handlers::ApiState;
use crate::status::ApiError;

/// The verified TLS client certificate (leaf, DER) of the connection a request came on.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<Arc<Vec<u8>>>);

/// The user of requests when authentication is disabled (plain local testing only).
pub fn unauthenticated_admin() -> UserInfo {
    UserInfo::new("kubernetes-admin", &[MASTERS])
}

/// The axum middleware.
pub async fn filter(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(authn) = state.authn.clone() else {
        return super::with_user(unauthenticated_admin(), next.run(req)).await;
    };
    let started = chrono::Utc::now();
    let peer = req.extensions().get::<PeerCert>().and_then(|p| p.0.clone());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let creds = Credentials {
        bearer: bearer.as_deref(),
        client_cert: peer.as_deref().map(Vec::as_slice),
    };
    let user = match authn.authenticate(creds).await {
        Ok(Some(u)) => u,
        Ok(None) => UserInfo::anonymous(),
        Err(e) => {
            tracing::debug!(path = %req.uri().path(), error = %e, "authentication failed");
            let resp = ApiError::Unauthorized.into_response();
            audit::record(&state, &req, None, None, resp.status(), started);
            return resp;
        }
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let authz = state.authz.clone();
    let user = match authz.as_ref() {
        Some(z) => match impersonate::apply(z, user.clone(), req.headers()).await {
            Ok(u) => u,
            Err(e) => {
                let resp = e.into_response();
                audit::record(&state, &req, Some(&user), None, resp.status(), started);
                return resp;
            }
        },
        None => user,
    };
    let attrs = Attributes::from_request(user.clone(), &method, &path, query.as_deref());
    if let Some(z) = authz.as_ref() {
        if let Err(resp) = authorize(z, &attrs).await {
            audit::record(
                &state,
                &req,
                Some(&user),
                Some(&attrs),
                resp.status(),
                started,
            );
            return resp;
        }
    }
    let mut req = req;
    req.headers_mut().remove(header::AUTHORIZATION);
    let audit_req = audit::RequestLine::of(&req);
    let resp = super::with_user(user.clone(), next.run(req)).await;
    audit::record_line(
        &state,
        audit_req,
        Some(&user),
        Some(&attrs),
        resp.status(),
        started,
    );
    resp
}

/// Authorizes `attrs`: Forbidden (or Unauthorized for an anonymous caller) unless allowed.
async fn authorize(z: &super::authz::Authorizer, attrs: &Attributes) -> Result<(), Response> {
    check(z, attrs).await?;
    // Websocket upgrades of exec/attach/portforward are GETs; they also need `create`
    // (upstream's AuthorizePodWebsocketUpgradeCreatePermission).
    if attrs.verb == "get"
        && attrs.resource == "pods"
        && matches!(
            attrs.subresource.as_str(),
            "exec" | "attach" | "portforward"
        )
    {
        let mut create = attrs.clone();
        create.verb = "create".into();
        check(z, &create).await?;
    }
    Ok(())
}

async fn check(z: &super::authz::Authorizer, attrs: &Attributes) -> Result<(), Response> {
    let reason = match z.authorize(attrs).await {
        Decision::Allow(_) => return Ok(()),
        Decision::Deny(r) | Decision::NoOpinion(r) => r,
    };
    if attrs.user.name == ANONYMOUS {
        return Err(ApiError::Unauthorized.into_response());
    }
    Err(ApiError::Forbidden(forbidden_text(attrs, &reason)).into_response())
}

/// Upstream's whole 403 text: `pods "web" is forbidden: User "jane" cannot get ...`.
pub fn forbidden_text(attrs: &Attributes, reason: &str) -> String {
    let msg = forbidden_message(attrs, reason);
    if !attrs.resource_request {
        return format!("forbidden: {msg}");
    }
    let mut what = attrs.resource.clone();
    if !attrs.api_group.is_empty() {
        what = format!("{what}.{}", attrs.api_group);
    }
    if !attrs.name.is_empty() {
        what = format!("{what} {:?}", attrs.name);
    }
    format!("{what} is forbidden: {msg}")
}

/// Whether a method is a read (for the audit log's level choice and tests).
pub fn is_read(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD)
}
