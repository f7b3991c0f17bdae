//! Protocol negotiation for an upgrade request, as kubelet does it: the first protocol the client
//! lists that the server supports wins, and the 101 answer names it (`X-Stream-Protocol-Version`
//! for SPDY, `Sec-WebSocket-Protocol` for WebSocket). Anything else is refused: 400 for a request
//! that is no upgrade (or a malformed one), 403 when no protocol matches.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::header::{SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION};
use hyper::{Method, Request, Response, StatusCode};

use crate::options::{PortForwardOptions, QueryError};

/// The SPDY upgrade token.
pub const SPDY_31: &str = "SPDY/3.1";
/// The request header listing the client's SPDY protocols, and the answer's chosen one.
pub const STREAM_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// The refusal header listing the server's SPDY protocols.
pub const ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";

/// A protocol this crate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Exec/attach over WebSocket `v5.channel.k8s.io`: channels, JSON status, close signals.
    WsV5,
    /// Exec/attach over WebSocket `v4.channel.k8s.io`: channels, JSON status.
    WsV4,
    /// Exec/attach over WebSocket `v4.base64.channel.k8s.io`: text messages, base64 data.
    WsV4Base64,
    /// Exec/attach over WebSocket `channel.k8s.io` (or no subprotocol): text status.
    WsV1,
    /// Exec/attach over WebSocket `base64.channel.k8s.io`.
    WsV1Base64,
    /// Exec/attach over SPDY/3.1 `v4.channel.k8s.io`: JSON status on the error stream.
    SpdyV4,
    /// Exec/attach over SPDY/3.1 `v3.channel.k8s.io`: v2 plus the resize stream.
    SpdyV3,
    /// Exec/attach over SPDY/3.1 `v2.channel.k8s.io`: text errors.
    SpdyV2,
    /// Port-forward over SPDY/3.1 `portforward.k8s.io`: a data and an error stream per connection.
    SpdyPortForward,
    /// `portforward.k8s.io` SPDY frames tunnelled in WebSocket binary messages
    /// (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later).
    WsSpdyPortForward,
    /// Kubelet's WebSocket port-forward `v4.channel.k8s.io`: two channels per `ports=` entry.
    WsPortForward,
    /// The same with `v4.base64.channel.k8s.io`.
    WsPortForwardBase64,
}

impl Protocol {
    /// The protocol's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::WsV5 => "v5.channel.k8s.io",
            Protocol::WsV4 | Protocol::SpdyV4 | Protocol::WsPortForward => "v4.channel.k8s.io",
            Protocol::WsV4Base64 | Protocol::WsPortForwardBase64 => "v4.base64.channel.k8s.io",
            Protocol::WsV1 => "channel.k8s.io",
            Protocol::WsV1Base64 => "base64.channel.k8s.io",
            Protocol::SpdyV3 => "v3.channel.k8s.io",
            Protocol::SpdyV2 => "v2.channel.k8s.io",
            Protocol::SpdyPortForward => "portforward.k8s.io",
            Protocol::WsSpdyPortForward => "SPDY/3.1+portforward.k8s.io",
        }
    }

    /// True for the WebSocket protocols.
    pub fn is_websocket(self) -> bool {
        !matches!(
            self,
            Protocol::SpdyV4 | Protocol::SpdyV3 | Protocol::SpdyV2 | Protocol::SpdyPortForward
        )
    }

    /// True for the port-forward protocols.
    pub fn is_port_forward(self) -> bool {
        matches!(
            self,
            Protocol::SpdyPortForward
                | Protocol::WsSpdyPortForward
                | Protocol::WsPortForward
                | Protocol::WsPortForwardBase64
        )
    }
}

const WS_EXEC: [Protocol; 5] = [
    Protocol::WsV5,
    Protocol::WsV4,
    Protocol::WsV4Base64,
    Protocol::WsV1,
    Protocol::WsV1Base64,
];
const SPDY_EXEC: [Protocol; 3] = [Protocol::SpdyV4, Protocol::SpdyV3, Protocol::SpdyV2];
const WS_PORT_FORWARD: [Protocol; 3] = [
    Protocol::WsSpdyPortForward,
    Protocol::WsPortForward,
    Protocol::WsPortForwardBase64,
];

/// The outcome of a successful negotiation: answer the request with [`Negotiated::response`],
/// then serve the upgraded connection with it.
#[derive(Debug, Clone)]
pub struct Negotiated {
    protocol: Protocol,
    /// The protocol named in the answer (`None` when the client named none).
    answer: Option<&'static str>,
    /// `Sec-WebSocket-Accept` for WebSocket.
    accept: Option<String>,
}

impl Negotiated {
    /// The chosen protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The `101 Switching Protocols` answer.
    pub fn response(&self) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Some(accept) = &self.accept {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert(SEC_WEBSOCKET_ACCEPT, v);
            }
            if let Some(p) = self.answer {
                h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
            }
        } else {
            h.insert(UPGRADE, HeaderValue::from_static(SPDY_31));
            if let Some(p) = self.answer {
                h.insert(STREAM_PROTOCOL_VERSION, HeaderValue::from_static(p));
            }
        }
        resp
    }
}

/// A refused request: answer it with [`Refusal::response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// 400 or 403.
    pub status: StatusCode,
    /// Why, as upstream words it.
    pub message: String,
    /// For SPDY: the server's protocols (sent as `X-Accepted-Stream-Protocol-Versions`).
    pub accepted: Vec<&'static str>,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            accepted: Vec::new(),
        }
    }

    /// The plain-text error answer.
    pub fn response(&self) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::from(format!("{}\n", self.message)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        for p in &self.accepted {
            h.append(
                ACCEPTED_STREAM_PROTOCOL_VERSIONS,
                HeaderValue::from_static(p),
            );
        }
        resp
    }
}

impl From<QueryError> for Refusal {
    fn from(e: QueryError) -> Self {
        Refusal::bad_request(e.to_string())
    }
}

/// Negotiates an exec or attach upgrade (WebSocket or SPDY).
pub fn negotiate_exec<B>(req: &Request<B>) -> Result<Negotiated, Refusal> {
    if is_websocket(req.headers()) {
        let accept = websocket_accept(req)?;
        return pick_websocket(req.headers(), &WS_EXEC, Protocol::WsV1, accept);
    }
    check_spdy(req.headers())?;
    let offered = spdy_protocols(req.headers());
    if offered.is_empty() {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "unable to upgrade: the client names no {STREAM_PROTOCOL_VERSION} (the unversioned protocol is not supported)"
            ),
            accepted: SPDY_EXEC.iter().map(|p| p.name()).collect(),
        });
    }
    pick_spdy(&offered, &SPDY_EXEC)
}

/// Negotiates a port-forward upgrade. Kubelet's WebSocket protocol needs the ports in the query.
pub fn negotiate_port_forward<B>(
    req: &Request<B>,
    opts: &PortForwardOptions,
) -> Result<Negotiated, Refusal> {
    if is_websocket(req.headers()) {
        let accept = websocket_accept(req)?;
        let chosen = pick_websocket(
            req.headers(),
            &WS_PORT_FORWARD,
            Protocol::WsPortForward,
            accept,
        )?;
        if chosen.protocol != Protocol::WsSpdyPortForward && opts.ports.is_empty() {
            return Err(QueryError::NoPorts.into());
        }
        return Ok(chosen);
    }
    check_spdy(req.headers())?;
    let offered = spdy_protocols(req.headers());
    if offered.is_empty() {
        // Upstream serves clients that name no protocol with the only one it has.
        return Ok(Negotiated {
            protocol: Protocol::SpdyPortForward,
            answer: None,
            accept: None,
        });
    }
    pick_spdy(&offered, &[Protocol::SpdyPortForward])
}

/// True when the request asks for a WebSocket upgrade.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, CONNECTION.as_str(), "upgrade")
        && has_token(headers, UPGRADE.as_str(), "websocket")
}

fn check_spdy(headers: &HeaderMap) -> Result<(), Refusal> {
    if has_token(headers, CONNECTION.as_str(), "upgrade")
        && has_token(headers, UPGRADE.as_str(), &SPDY_31.to_ascii_lowercase())
    {
        Ok(())
    } else {
        Err(Refusal::bad_request(
            "unable to upgrade: missing upgrade headers in request (want Connection: Upgrade and Upgrade: websocket or SPDY/3.1)",
        ))
    }
}

fn websocket_accept<B>(req: &Request<B>) -> Result<String, Refusal> {
    if req.method() != Method::GET {
        return Err(Refusal::bad_request(format!(
            "websocket: the upgrade request must be a GET, not {}",
            req.method()
        )));
    }
    let h = req.headers();
    if h.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Refusal::bad_request(
            "websocket: Sec-WebSocket-Version must be 13",
        ));
    }
    let key = h
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Refusal::bad_request("websocket: Sec-WebSocket-Key is missing"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

fn pick_websocket(
    headers: &HeaderMap,
    supported: &[Protocol],
    unnamed: Protocol,
    accept: String,
) -> Result<Negotiated, Refusal> {
    let offered = header_list(headers, SEC_WEBSOCKET_PROTOCOL.as_str());
    if offered.is_empty() {
        return Ok(Negotiated {
            protocol: unnamed,
            answer: None,
            accept: Some(accept),
        });
    }
    for name in &offered {
        if let Some(p) = supported.iter().find(|p| p.name() == name) {
            return Ok(Negotiated {
                protocol: *p,
                answer: Some(p.name()),
                accept: Some(accept),
            });
        }
    }
    let names: Vec<&str> = supported.iter().map(|p| p.name()).collect();
    Err(Refusal {
        status: StatusCode::FORBIDDEN,
        message: format!(
            "requested protocol(s) are not supported: {offered:?}; supports {names:?}"
        ),
        accepted: Vec::new(),
    })
}

fn pick_spdy(offered: &[String], supported: &[Protocol]) -> Result<Negotiated, Refusal> {
    for name in offered {
        if let Some(p) = supported.iter().find(|p| p.name() == name) {
            return Ok(Negotiated {
                protocol: *p,
                answer: Some(p.name()),
                accept: None,
            });
        }
    }
    let names: Vec<&'static str> = supported.iter().map(|p| p.name()).collect();
    Err(Refusal {
        status: StatusCode::FORBIDDEN,
        message: format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {names:?}"
        ),
        accepted: names,
    })
}

fn spdy_protocols(headers: &HeaderMap) -> Vec<String> {
    header_list(headers, STREAM_PROTOCOL_VERSION)
}

/// Every comma-separated entry of every instance of a header, trimmed.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    header_list(headers, name)
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spdy(protocols: &[&str]) -> Request<()> {
        let mut b = Request::post("/exec")
            .header("Connection", "Upgrade")
            .header("Upgrade", "SPDY/3.1");
        for p in protocols {
            b = b.header(STREAM_PROTOCOL_VERSION, *p);
        }
        b.body(()).unwrap()
    }

    fn ws(protocols: Option<&str>) -> Request<()> {
        let mut b = Request::get("/exec")
            .header("Connection", "keep-alive, Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(p) = protocols {
            b = b.header("Sec-WebSocket-Protocol", p);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn spdy_picks_the_clients_first_supported() {
        let n = negotiate_exec(&spdy(&[
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io",
        ]))
        .unwrap();
        assert_eq!(n.protocol(), Protocol::SpdyV4);
        let resp = n.response();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()[UPGRADE], "SPDY/3.1");
        assert_eq!(resp.headers()[CONNECTION], "Upgrade");
        assert_eq!(resp.headers()[STREAM_PROTOCOL_VERSION], "v4.channel.k8s.io");
        let n = negotiate_exec(&spdy(&["channel.k8s.io", "v2.channel.k8s.io"])).unwrap();
        assert_eq!(n.protocol(), Protocol::SpdyV2);
    }

    #[test]
    fn spdy_refusals() {
        let r = negotiate_exec(&spdy(&["v9.channel.k8s.io"])).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.message.contains("unable to negotiate protocol"), "{r}");
        let resp = r.response();
        let accepted: Vec<_> = resp
            .headers()
            .get_all(ACCEPTED_STREAM_PROTOCOL_VERSIONS)
            .iter()
            .collect();
        assert_eq!(
            accepted,
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io"
            ]
        );
        assert_eq!(
            negotiate_exec(&spdy(&[])).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let plain = Request::post("/exec").body(()).unwrap();
        let r = negotiate_exec(&plain).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.message.contains("missing upgrade headers"), "{r}");
    }

    #[test]
    fn websocket_exec() {
        let n = negotiate_exec(&ws(Some("v5.channel.k8s.io, v4.channel.k8s.io"))).unwrap();
        assert_eq!(n.protocol(), Protocol::WsV5);
        let resp = n.response();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()[UPGRADE], "websocket");
        // RFC 6455's example key and answer.
        assert_eq!(
            resp.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(resp.headers()[SEC_WEBSOCKET_PROTOCOL], "v5.channel.k8s.io");
        let n = negotiate_exec(&ws(Some("x, v4.base64.channel.k8s.io"))).unwrap();
        assert_eq!(n.protocol(), Protocol::WsV4Base64);
        let n = negotiate_exec(&ws(None)).unwrap();
        assert_eq!(n.protocol(), Protocol::WsV1);
        assert!(n.response().headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());
        let r = negotiate_exec(&ws(Some("SPDY/3.1+portforward.k8s.io"))).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let mut post = ws(Some("v5.channel.k8s.io"));
        *post.method_mut() = Method::POST;
        assert_eq!(
            negotiate_exec(&post).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn port_forward() {
        let none = PortForwardOptions::default();
        let some = PortForwardOptions { ports: vec![8080] };
        let n = negotiate_port_forward(&spdy(&["portforward.k8s.io"]), &none).unwrap();
        assert_eq!(n.protocol(), Protocol::SpdyPortForward);
        assert_eq!(
            n.response().headers()[STREAM_PROTOCOL_VERSION],
            "portforward.k8s.io"
        );
        assert_eq!(
            negotiate_port_forward(&spdy(&[]), &none)
                .unwrap()
                .protocol(),
            Protocol::SpdyPortForward
        );
        assert_eq!(
            negotiate_port_forward(&spdy(&["v4.channel.k8s.io"]), &none)
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        let tunnel = ws(Some("SPDY/3.1+portforward.k8s.io"));
        let n = negotiate_port_forward(&tunnel, &none).unwrap();
        assert_eq!(n.protocol(), Protocol::WsSpdyPortForward);
        assert_eq!(
            n.response().headers()[SEC_WEBSOCKET_PROTOCOL],
            "SPDY/3.1+portforward.k8s.io"
        );
        let kube_rs = ws(Some("v5.channel.k8s.io, v4.channel.k8s.io"));
        let n = negotiate_port_forward(&kube_rs, &some).unwrap();
        assert_eq!(n.protocol(), Protocol::WsPortForward);
        let r = negotiate_port_forward(&kube_rs, &none).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.message.contains("\"ports\" is required"), "{r}");
    }
}
