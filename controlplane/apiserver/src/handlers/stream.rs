//! `pods/exec`, `pods/attach` (GET or POST) and `pods/portforward`, as upstream's `ExecREST`,
//! `AttachREST` and `PortForwardREST`: the options are validated, the container checked against
//! the pod (the same rules as `pods/log`), the pod's node found, and the client's upgrade request
//! proxied to the node API (`/exec|/attach/{namespace}/{pod}/{container}`,
//! `/portForward/{namespace}/{pod}`) over TLS verified by the cluster CA with the kubelet-client
//! token; the node's answer (101 and then the spliced streams, or its refusal) goes back to the
//! client as it is. The streaming protocols themselves are spoken by the runtime (kennel-stream).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use kennel_stream::{ExecOptions, PortForwardOptions};

use super::log::{
    authority, connect_node, node_access, percent_encode, pick_container, PodLogError,
};
use super::{read_current, ApiState};
use crate::request::Target;
use crate::status::ApiError;

/// Which streaming subresource a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `pods/exec`.
    Exec,
    /// `pods/attach`.
    Attach,
    /// `pods/portforward`.
    PortForward,
}

impl Kind {
    /// The streaming subresource named `sub`, if it is one.
    pub fn of(sub: &str) -> Option<Self> {
        match sub {
            "exec" => Some(Kind::Exec),
            "attach" => Some(Kind::Attach),
            "portforward" => Some(Kind::PortForward),
            _ => None,
        }
    }
}

/// The node's query for exec/attach options (upstream's `streamParams`).
fn node_query(opts: &ExecOptions) -> String {
    let mut q: Vec<String> = opts
        .command
        .iter()
        .map(|c| format!("command={}", percent_encode(c)))
        .collect();
    for (name, on) in [
        ("stdin", opts.stdin),
        ("stdout", opts.stdout),
        ("stderr", opts.stderr),
        ("tty", opts.tty),
    ] {
        if on {
            q.push(format!("{name}=true"));
        }
    }
    q.join("&")
}

/// The node API path for a validated request of `kind` on `pod`.
fn node_path(
    kind: Kind,
    query: Option<&str>,
    namespace: &str,
    pod: &serde_json::Value,
    name: &str,
) -> Result<String, ApiError> {
    let bad = |e: kennel_stream::QueryError| ApiError::BadRequest(e.to_string());
    match kind {
        Kind::PortForward => {
            let opts = PortForwardOptions::from_query(query).map_err(bad)?;
            let mut path = format!("/portForward/{namespace}/{name}");
            if !opts.ports.is_empty() {
                let ports: Vec<String> = opts.ports.iter().map(u16::to_string).collect();
                path = format!("{path}?ports={}", ports.join(","));
            }
            Ok(path)
        }
        Kind::Exec | Kind::Attach => {
            let opts = if kind == Kind::Exec {
                ExecOptions::exec_from_query(query).map_err(bad)?
            } else {
                ExecOptions::attach_from_query(query).map_err(bad)?
            };
            if !opts.stdin && !opts.stdout && !opts.stderr {
                return Err(ApiError::BadRequest(
                    "you must specify at least 1 of stdin, stdout, stderr".into(),
                ));
            }
            let container = pick_container(pod, opts.container.as_deref())?;
            let verb = if kind == Kind::Exec { "exec" } else { "attach" };
            Ok(format!(
                "/{verb}/{namespace}/{name}/{container}?{}",
                node_query(&opts)
            ))
        }
    }
}

/// Answers `pods/{name}/exec|attach|portforward`.
pub async fn handle(state: &ApiState, t: &Target, kind: Kind, req: Request<Body>) -> Response {
    let name = t.name.clone().unwrap_or_default();
    match proxy(state, t, kind, &name, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(&name),
    }
}

async fn proxy(
    state: &ApiState,
    t: &Target,
    kind: Kind,
    name: &str,
    req: Request<Body>,
) -> Result<Response, PodLogError> {
    let (_, pod) = read_current(state, t.def, t.namespace.as_deref(), name).await?;
    let namespace = t.namespace.as_deref().unwrap_or("default");
    let path = node_path(kind, req.uri().query(), namespace, &pod, name)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(
            ApiError::BadRequest(format!("pod {name} does not have a host assigned")).into(),
        );
    }
    if kind != Kind::PortForward {
        if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
            return Err(ApiError::BadRequest(format!(
                "cannot exec into or attach to a container in a completed pod; current phase is {phase}"
            ))
            .into());
        }
    }
    let (client, host, port) = node_access(state, node_name).await?;
    let authority = authority(&host, port);
    let url = format!("https://{authority}{path}");
    let tls = connect_node(&client, &host, port, &url).await?;
    let mut extra = HeaderMap::new();
    extra.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&client.bearer()).map_err(|_| {
            PodLogError::Node("the kubelet-client token is not a header value".into())
        })?,
    );
    let resp = kennel_stream::forward_upgrade(req, tls, &authority, &path, extra)
        .await
        .map_err(|e| PodLogError::Node(format!("{url}: {e}")))?;
    if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
        // The node refused the API server itself (not a protocol refusal, which is a 400/403
        // with the protocol named): say whose credentials were refused.
        if !resp
            .headers()
            .contains_key("x-accepted-stream-protocol-versions")
            && resp.status() == StatusCode::UNAUTHORIZED
        {
            return Err(PodLogError::Node(format!(
                "node {node_name} rejected the API server's kubelet-client credentials ({})",
                resp.status()
            )));
        }
    }
    Ok(resp.map(Body::from).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> serde_json::Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "app"}, {"name": "side"}]}})
    }

    #[test]
    fn exec_paths_carry_the_validated_options() {
        let p = node_path(
            Kind::Exec,
            Some("command=sh&command=-c&command=echo%20hi&container=app&stdin=true&stdout=true&tty=1"),
            "ns",
            &pod(),
            "web",
        )
        .unwrap();
        assert_eq!(
            p,
            "/exec/ns/web/app?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true"
        );
        let p = node_path(
            Kind::Attach,
            Some("container=setup&stdout=true"),
            "ns",
            &pod(),
            "web",
        );
        assert_eq!(p.unwrap(), "/attach/ns/web/setup?stdout=true");
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = |kind, q| {
            node_path(kind, Some(q), "ns", &pod(), "web")
                .unwrap_err()
                .to_string()
        };
        assert!(err(Kind::Exec, "container=app&stdout=true").contains("at least one command"));
        assert!(err(Kind::Exec, "command=ls&container=app").contains("at least 1 of stdin"));
        assert!(err(Kind::Exec, "command=ls&container=nope&stdout=1")
            .contains("container nope is not valid for pod web"));
        assert!(err(Kind::Exec, "command=ls&stdout=1").contains("choose one of: [setup app side]"));
        assert!(err(Kind::PortForward, "ports=0").contains("port"));
        assert_eq!(
            node_path(
                Kind::PortForward,
                Some("ports=8080&ports=9090"),
                "ns",
                &pod(),
                "web"
            )
            .unwrap(),
            "/portForward/ns/web?ports=8080,9090"
        );
        assert_eq!(
            node_path(Kind::PortForward, None, "ns", &pod(), "web").unwrap(),
            "/portForward/ns/web"
        );
    }
}
