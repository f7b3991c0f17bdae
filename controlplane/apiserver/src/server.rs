//! The HTTP(S) server: routes, bearer-token authentication, TLS accept loop, bootstrap objects.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path as AxPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;

use tower::ServiceExt;

use super::auth::audit::PeerAddr;
use super::auth::filter::PeerCert;
use super::discovery;
use super::handlers::{dispatch, encode, json_response, stream, ApiState};
use super::registry;
use super::status::ApiError;
use kennel_store::StoreError;

/// Runs a handler; a panic in it answers 500 InternalError instead of resetting the
/// connection (the server and every other request carry on).
async fn guarded(handler: impl std::future::Future<Output = Response>) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "a request handler panicked");
            ApiError::Internal(format!("the server failed handling this request: {what}"))
                .into_response()
        }
    }
}

async fn resources(State(state): State<ApiState>, req: Request) -> Response {
    guarded(route_request(state, req)).await
}

async fn route_request(state: ApiState, req: Request) -> Response {
    // The streaming subresources keep the whole request: their upgrade is proxied to the node.
    if let Ok(Some(t)) = crate::request::parse_path(req.uri().path()) {
        if t.def.is_metrics() {
            if req.method() != Method::GET || t.sub.is_some() {
                return ApiError::MethodNotAllowed.into_response();
            }
            let query = crate::request::parse_query(req.uri().query());
            return crate::handlers::metrics::handle(&state, &t, &query).await;
        }
        if crate::auth::reviews::handles(&t, req.method()) {
            let (parts, body) = req.into_parts();
            let body = match crate::handlers::read_body(body).await {
                Ok(b) => b,
                Err(e) => return e.into_response(),
            };
            return crate::auth::reviews::handle(&state, &t, &parts.headers, &body).await;
        }
        if let Some(kind) = t.sub.as_deref().and_then(stream::Kind::of) {
            if t.def.plural == "pods" && t.def.group.is_empty() && t.name.is_some() {
                if !matches!(*req.method(), Method::GET | Method::POST) {
                    return ApiError::MethodNotAllowed.into_response();
                }
                return stream::handle(&state, &t, kind, req).await;
            }
        }
    }
    let (parts, body) = req.into_parts();
    dispatch(state, parts.method, parts.uri, parts.headers, body).await
}

fn ok_text() -> Response {
    (StatusCode::OK, "ok").into_response()
}

/// Builds the router for `state`: every request passes the auth filter (authentication,
/// impersonation, authorization, audit) first.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { json_response(StatusCode::OK, &discovery::version(), &[]) }),
        )
        .route("/healthz", get(|| async { ok_text() }))
        .route("/livez", get(|| async { ok_text() }))
        .route(
            "/readyz",
            get(|State(state): State<ApiState>| async move {
                match state.store.current_revision().await {
                    Ok(_) => ok_text(),
                    Err(e) => {
                        (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")).into_response()
                    }
                }
            }),
        )
        .route(
            "/api",
            get(|headers: HeaderMap| async move { discovery::core_versions(&headers) }),
        )
        .route(
            "/apis",
            get(|headers: HeaderMap| async move { discovery::groups(&headers) }),
        )
        .route(
            "/openapi/v2",
            get(|headers: HeaderMap| async move {
                discovery::openapi_v2(&headers).unwrap_or_else(IntoResponse::into_response)
            }),
        )
        .route(
            "/openapi/v3",
            get(|| async { discovery::openapi_v3_index() }),
        )
        .route(
            "/openapi/v3/{*rest}",
            get(|AxPath(rest): AxPath<String>| async move {
                discovery::openapi_v3_doc(&rest).unwrap_or_else(IntoResponse::into_response)
            }),
        )
        .fallback(resources)
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(
            state,
            crate::auth::filter::filter,
        ))
}

/// Creates the objects every cluster starts with (namespaces, the `kubernetes` service).
pub async fn bootstrap(state: &ApiState) -> Result<(), StoreError> {
    let ns = registry::find("", "v1", "namespaces").expect("namespaces registered");
    let now = super::defaults::now_rfc3339();
    let api_ip = state.services.api_ip().to_string();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        match state.store.create(&ns.key(None, name), encode(&obj)).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let svc = registry::find("", "v1", "services").expect("services registered");
    let obj = json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now, "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": api_ip, "clusterIPs": [api_ip],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    });
    match state
        .store
        .create(&svc.key(Some("default"), "kubernetes"), encode(&obj))
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serves `router` on `listener` until the task is aborted; TLS when `tls` is set.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (sock, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let with_peer = |cert: PeerCert| {
                TowerToHyperService::new(router.map_request(
                    move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(cert.clone());
                        req.extensions_mut().insert(PeerAddr(peer));
                        req
                    },
                ))
            };
            let res = match acceptor {
                Some(acc) => match acc.accept(sock).await {
                    Ok(tls) => {
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| Arc::new(c.to_vec()));
                        let svc = with_peer(PeerCert(cert));
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let svc = with_peer(PeerCert(None));
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(sock), svc)
                        .await
                }
            };
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500() {
        let resp = guarded(async { panic!("boom") }).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], "InternalError");
        assert!(
            status["message"].as_str().unwrap().contains("boom"),
            "{status}"
        );
        let ok = guarded(async { ok_text() }).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
