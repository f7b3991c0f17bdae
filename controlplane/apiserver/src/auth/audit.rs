//! The audit log: one `audit.k8s.io/v1` Event per request (JSON lines, stage
//! `ResponseComplete`), at the level the first matching rule of the audit policy gives
//! (upstream's `--audit-log-path` / `--audit-policy-file`). Without a policy file every request is
//! logged at `Metadata`. Levels `Request` and `RequestResponse` are written as `Metadata` (request
//! and response bodies are not recorded).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use axum::extract::Request;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Attributes, UserInfo};
use crate::handlers::ApiState;

/// Errors of loading the audit configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log or policy file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The policy does not parse.
    #[error("audit policy {path}: {message}")]
    Policy {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// An audit level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// Not logged.
    None,
    /// Request metadata (user, verb, resource, response code).
    Metadata,
    /// Metadata and the request body (written as Metadata here).
    Request,
    /// Metadata, request and response bodies (written as Metadata here).
    RequestResponse,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
}

/// An audit policy (`audit.k8s.io/v1` `Policy`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Policy {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(skip)]
    everything: bool,
}

impl Policy {
    /// Logs every request at Metadata.
    pub fn metadata_for_all() -> Self {
        Policy {
            rules: vec![],
            everything: true,
        }
    }

    /// Parses a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if v["kind"] != "Policy" {
            return Err(format!("kind must be Policy, not {}", v["kind"]));
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The level for a request.
    pub fn level(&self, user: Option<&UserInfo>, a: Option<&Attributes>) -> Level {
        if self.everything {
            return Level::Metadata;
        }
        self.rules
            .iter()
            .find(|r| r.matches(user, a))
            .map_or(Level::None, |r| r.level)
    }
}

impl Rule {
    fn matches(&self, user: Option<&UserInfo>, a: Option<&Attributes>) -> bool {
        let name = user.map_or("", |u| u.name.as_str());
        if !self.users.is_empty() && !self.users.iter().any(|u| u == name) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !user.is_some_and(|u| self.user_groups.iter().any(|g| u.in_group(g)))
        {
            return false;
        }
        let Some(a) = a else {
            return self.verbs.is_empty()
                && self.resources.is_empty()
                && self.namespaces.is_empty();
        };
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !a.resource_request {
            return (self.non_resource_urls.is_empty()
                && self.resources.is_empty()
                && self.namespaces.is_empty())
                || self
                    .non_resource_urls
                    .iter()
                    .any(|p| match p.strip_suffix('*') {
                        Some(prefix) => a.path.starts_with(prefix),
                        None => *p == a.path,
                    });
        }
        if !self.non_resource_urls.is_empty() && self.resources.is_empty() {
            return false;
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let full = a.full_resource();
        self.resources.iter().any(|gr| {
            gr.group == a.api_group
                && (gr.resources.is_empty()
                    || gr.resources.iter().any(|r| {
                        *r == full
                            || *r == a.resource && a.subresource.is_empty()
                            || r.strip_prefix("*/").is_some_and(|s| s == a.subresource)
                            || r.strip_suffix("/*").is_some_and(|s| s == a.resource)
                            || r == "*"
                    }))
                && (gr.resource_names.is_empty() || gr.resource_names.contains(&a.name))
        })
    }
}

/// An open audit log.
pub struct AuditLog {
    file: Mutex<std::fs::File>,
    policy: Policy,
}

impl AuditLog {
    /// Opens (appends to) `log`, with the policy in `policy` (Metadata for all when `None`).
    pub fn open(log: &Path, policy: Option<&Path>) -> Result<Self, AuditError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| AuditError::Io { path, source }
        };
        let policy = match policy {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(io(p))?;
                Policy::parse(&text).map_err(|message| AuditError::Policy {
                    path: p.display().to_string(),
                    message,
                })?
            }
            None => Policy::metadata_for_all(),
        };
        if let Some(d) = log.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(log))?;
        Ok(AuditLog {
            file: Mutex::new(file),
            policy,
        })
    }

    fn write(&self, event: &Value) {
        let mut line = event.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "audit log write failed");
        }
    }
}

/// The peer address of a connection (set by the server on every request).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What the audit event needs from a request (kept before the request moves into the handler).
pub struct RequestLine {
    uri: String,
    user_agent: String,
    source: Option<SocketAddr>,
}

impl RequestLine {
    /// Captures `req`.
    pub fn of(req: &Request) -> Self {
        RequestLine {
            uri: req.uri().to_string(),
            user_agent: req
                .headers()
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            source: req.extensions().get::<PeerAddr>().map(|p| p.0),
        }
    }
}

/// Records a request that ended in the filter.
pub fn record(
    state: &ApiState,
    req: &Request,
    user: Option<&UserInfo>,
    attrs: Option<&Attributes>,
    code: StatusCode,
    started: chrono::DateTime<chrono::Utc>,
) {
    if state.audit.is_some() {
        record_line(state, RequestLine::of(req), user, attrs, code, started);
    }
}

/// Records a request.
pub fn record_line(
    state: &ApiState,
    line: RequestLine,
    user: Option<&UserInfo>,
    attrs: Option<&Attributes>,
    code: StatusCode,
    started: chrono::DateTime<chrono::Utc>,
) {
    let Some(log) = state.audit.as_ref() else {
        return;
    };
    if log.policy.level(user, attrs) == Level::None {
        return;
    }
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut ev = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(), "stage": "ResponseComplete",
        "requestURI": line.uri,
        "verb": attrs.map_or("", |a| a.verb.as_str()),
        "user": user.map_or(json!({}), |u| json!(u)),
        "sourceIPs": line.source.map(|s| vec![s.ip().to_string()]).unwrap_or_default(),
        "userAgent": line.user_agent,
        "responseStatus": {"metadata": {}, "code": code.as_u16()},
        "requestReceivedTimestamp": ts(started),
        "stageTimestamp": ts(chrono::Utc::now()),
    });
    if let Some(a) = attrs.filter(|a| a.resource_request) {
        let mut r = json!({"resource": a.resource, "apiVersion": a.api_version});
        for (k, v) in [
            ("namespace", &a.namespace),
            ("name", &a.name),
            ("apiGroup", &a.api_group),
            ("subresource", &a.subresource),
        ] {
            if !v.is_empty() {
                r[k] = json!(v);
            }
        }
        ev["objectRef"] = r;
    }
    log.write(&ev);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn policy_rules_pick_levels_in_order() {
        let p = Policy::parse(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["secrets"]
- level: Metadata
  namespaces: ["prod"]
"#,
        )
        .unwrap();
        let u = UserInfo::new("jane", &[]);
        let a = |m: Method, path: &str| Attributes::from_request(u.clone(), &m, path, None);
        assert_eq!(
            p.level(Some(&u), Some(&a(Method::GET, "/healthz"))),
            Level::None
        );
        assert_eq!(
            p.level(
                Some(&u),
                Some(&a(Method::GET, "/api/v1/namespaces/x/secrets/s"))
            ),
            Level::RequestResponse
        );
        assert_eq!(
            p.level(
                Some(&u),
                Some(&a(Method::GET, "/api/v1/namespaces/prod/pods"))
            ),
            Level::Metadata
        );
        assert_eq!(
            p.level(
                Some(&u),
                Some(&a(Method::GET, "/api/v1/namespaces/dev/pods"))
            ),
            Level::None
        );
        assert!(Policy::parse("kind: Pod").is_err());
    }
}
