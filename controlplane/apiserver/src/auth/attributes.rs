//! What a request asks to do, as authorizers see it (upstream's `RequestInfo` +
//! `authorizer.Attributes`): a resource request (verb, API group, namespace, resource,
//! subresource, name) or a non-resource request (verb and path).

use axum::http::Method;

use super::UserInfo;

/// Everything an authorization decision is made on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// another verb (`impersonate`, `bind`, `escalate`, `approve`); lowercase HTTP method for
    /// non-resource requests.
    pub verb: String,
    /// Whether this names an API resource (`/api/...`, `/apis/...` below a group version).
    pub resource_request: bool,
    /// The request path (for non-resource requests).
    pub path: String,
    /// Namespace (empty for cluster-scoped and all-namespace requests).
    pub namespace: String,
    /// API group (`""` for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, `log`, `exec`, ...).
    pub subresource: String,
    /// Object name (empty for collections).
    pub name: String,
}

/// Namespace subresources that stay on the namespace (`/api/v1/namespaces/x/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// Attributes of an HTTP request by `user`, parsed as upstream's request-info factory does.
    pub fn from_request(user: UserInfo, method: &Method, path: &str, query: Option<&str>) -> Self {
        let mut a = Attributes {
            user,
            path: path.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", v, rest @ ..] if !v.is_empty() => {
                a.api_version = v.to_string();
                rest
            }
            ["apis", g, v, rest @ ..] => {
                a.api_group = g.to_string();
                a.api_version = v.to_string();
                rest
            }
            _ => return a,
        };
        let mut rest: Vec<&str> = rest.to_vec();
        // The legacy `/watch/` prefix (`/api/v1/watch/pods`).
        let mut watch_prefix = false;
        if rest.first() == Some(&"watch") {
            watch_prefix = true;
            rest.remove(0);
        }
        if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
            // A group-version root (discovery): not a resource request.
            a.api_group.clear();
            a.api_version.clear();
            return a;
        }
        a.resource_request = true;
        if rest[0] == "namespaces" && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest.drain(..2);
            }
        }
        a.resource = rest[0].to_string();
        if let Some(n) = rest.get(1) {
            a.name = n.to_string();
        }
        if let Some(s) = rest.get(2) {
            a.subresource = s.to_string();
        }
        let watch = watch_prefix || query_flag(query, "watch");
        a.verb = match *method {
            Method::POST => "create".into(),
            Method::GET | Method::HEAD if watch => "watch".into(),
            Method::GET | Method::HEAD if a.name.is_empty() => "list".into(),
            Method::GET | Method::HEAD => "get".into(),
            Method::PUT => "update".into(),
            Method::PATCH => "patch".into(),
            Method::DELETE if a.name.is_empty() => "deletecollection".into(),
            Method::DELETE => "delete".into(),
            _ => a.verb,
        };
        // A list or watch of one object by field selector is authorized as that object.
        if matches!(a.verb.as_str(), "list" | "watch") && a.name.is_empty() {
            if let Some(name) = query_value(query, "fieldSelector")
                .and_then(|fs| single_name_selector(&fs).map(str::to_string))
            {
                a.name = name;
            }
        }
        a
    }

    /// `resource/subresource` (or just the resource).
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    crate::request::parse_query(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Upstream's boolean query parameter reading: present and not `false`/`0`.
fn query_flag(query: Option<&str>, key: &str) -> bool {
    query_value(query, key).is_some_and(|v| !matches!(v.as_str(), "false" | "0"))
}

/// `metadata.name=X` (or `==`) as the whole field selector.
fn single_name_selector(fs: &str) -> Option<&str> {
    let fs = fs.trim();
    let v = fs
        .strip_prefix("metadata.name==")
        .or_else(|| fs.strip_prefix("metadata.name="))?;
    (!v.is_empty() && !v.contains(',')).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(m: Method, path: &str, q: Option<&str>) -> Attributes {
        Attributes::from_request(UserInfo::new("u", &[]), &m, path, q)
    }

    #[test]
    fn resource_requests() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "default", "pods")
        );
        assert!(a.resource_request);
        let a = attrs(
            Method::GET,
            "/api/v1/pods",
            Some("watch=true&resourceVersion=5"),
        );
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        let a = attrs(Method::GET, "/api/v1/watch/namespaces/a/pods/p", None);
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p"));
        let a = attrs(
            Method::POST,
            "/api/v1/namespaces/a/pods/p/exec",
            Some("command=ls"),
        );
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
                a.name.as_str()
            ),
            ("create", "pods", "exec", "p")
        );
        assert_eq!(a.full_resource(), "pods/exec");
        let a = attrs(
            Method::DELETE,
            "/apis/apps/v1/namespaces/a/deployments",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let a = attrs(
            Method::PATCH,
            "/apis/apps/v1/namespaces/a/deployments/d/scale",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("patch", "scale")
        );
    }

    #[test]
    fn namespaces_are_their_own_resource() {
        let a = attrs(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (
                a.verb.as_str(),
                a.namespace.as_str(),
                a.resource.as_str(),
                a.name.as_str()
            ),
            ("get", "kube-system", "namespaces", "kube-system")
        );
        let a = attrs(Method::PUT, "/api/v1/namespaces/x/finalize", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("namespaces", "x", "finalize")
        );
        let a = attrs(Method::GET, "/api/v1/namespaces", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "namespaces", "")
        );
    }

    #[test]
    fn field_selector_names_the_object() {
        let a = attrs(
            Method::GET,
            "/api/v1/namespaces/a/secrets",
            Some("fieldSelector=metadata.name%3Dtok&watch=1"),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "tok"));
    }

    #[test]
    fn non_resource_requests() {
        for p in [
            "/healthz",
            "/version",
            "/api",
            "/apis",
            "/apis/apps/v1",
            "/api/v1",
            "/openapi/v2",
        ] {
            let a = attrs(Method::GET, p, None);
            assert!(!a.resource_request, "{p}");
            assert_eq!(a.verb, "get");
            assert_eq!(a.path, p);
        }
    }
}
