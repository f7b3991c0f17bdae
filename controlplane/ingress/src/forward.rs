//! One proxied request: route by host and path in the current table, pick an endpoint
//! round-robin, forward with hyper (hop-by-hop headers dropped, `X-Forwarded-*` set, bodies
//! streamed both ways), and answer 404 / 503 / 502 when there is no route / no endpoint / no
//! answer. `Upgrade` requests (WebSocket and others) are upgraded on both sides and copied.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::paths::request_host;
use crate::table::RouteTable;

/// Response bodies: the upstream's, streamed, or a short page of our own.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;
/// The pooled HTTP/1.1 client towards endpoints.
pub(crate) type UpstreamClient = hyper_util::client::legacy::Client<HttpConnector, Incoming>;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones proxies conventionally drop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// What every request handler shares.
pub(crate) struct Proxy {
    /// The current routing table.
    pub(crate) table: ArcSwap<RouteTable>,
    /// Connections to endpoints (pooled, keep-alive).
    pub(crate) client: UpstreamClient,
    /// Closed when the controller stops (ends upgraded tunnels).
    pub(crate) stop: watch::Receiver<()>,
}

/// The client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// The client.
    pub(crate) peer: SocketAddr,
    /// Our listening port.
    pub(crate) port: u16,
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` + `Upgrade`).
pub fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let all: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if all.len() < 2 {
        return;
    }
    let joined = all.join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// A short text page of our own.
pub(crate) fn page(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text)).map_err(|n| match n {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Serves one request.
pub(crate) async fn handle(
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let upgrade = upgrade_protocol(req.version(), req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let host_value = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let host = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(request_host)
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());

    let table = proxy.table.load();
    let Some(backend) = table.route(&host, parts.uri.path()) else {
        return Ok(page(
            StatusCode::NOT_FOUND,
            "default backend - 404\n".into(),
        ));
    };
    let Some(endpoint) = backend.pick() else {
        return Ok(page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "503 Service Unavailable: no endpoints for {}\n",
                backend.name
            ),
        ));
    };
    let backend_name = backend.name.clone();
    drop(table);

    let uri = match Uri::builder()
        .scheme("http")
        .authority(endpoint.to_string())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(u) => u,
        Err(e) => return Ok(page(StatusCode::BAD_REQUEST, format!("bad request: {e}\n"))),
    };
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    join_cookies(h);
    if let Some(proto) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
    if let Some(v) = &host_value {
        h.insert(header::HOST, v.clone());
        h.insert(X_FORWARDED_HOST.clone(), v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&conn.peer.ip().to_string()) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(conn.scheme),
    );
    h.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(conn.port));
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let mut resp = match proxy.client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(backend = %backend_name, %endpoint, error = %e, "upstream failed");
            return Ok(page(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n".into()));
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Ok(page(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n".into()));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let mut stop = proxy.stop.clone();
        tokio::spawn(async move {
            let tunnel = async {
                let (c, u) = tokio::try_join!(client_upgrade, upstream_upgrade)?;
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                Ok::<_, hyper::Error>(())
            };
            tokio::select! {
                r = tunnel => if let Err(e) = r {
                    tracing::debug!(error = %e, "upgrade failed");
                },
                _ = stop.changed() => {}
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(
            parts,
            Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("x-keep", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-keep"]);
    }

    #[test]
    fn upgrades_need_both_headers_and_http11() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(Version::HTTP_11, &h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(Version::HTTP_11, &h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(upgrade_protocol(Version::HTTP_2, &h), None);
    }

    #[test]
    fn cookies_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }
}
