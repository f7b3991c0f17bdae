//! The Ingress matching rules, pure: hosts (exact and `*.` single-label wildcards) and paths
//! (`Exact`, `Prefix` element-wise on `/`, `ImplementationSpecific` as `Prefix`), as the
//! Kubernetes Ingress specification defines them.
#![forbid(unsafe_code)]

/// A path's `pathType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix on `/`-separated segments (trailing `/` ignored).
    Prefix,
}

/// A path rule could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `pathType` is not one of the three defined values.
    #[error("unknown pathType {0:?}")]
    UnknownType(String),
    /// The path does not start with `/`.
    #[error("path {0:?} must start with '/'")]
    NotAbsolute(String),
    /// `Exact` without a path.
    #[error("pathType Exact needs a path")]
    ExactWithoutPath,
}

/// A host rule could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A `*` anywhere but as the whole first label.
    #[error("host {0:?}: a wildcard must be the whole first label (\"*.example.com\")")]
    BadWildcard(String),
    /// Empty labels, spaces, a port or other characters a host name cannot have.
    #[error("host {0:?} is not a DNS name")]
    Invalid(String),
}

/// A parsed path rule: its kind and the path as compared (`Prefix` without trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathMatch {
    /// Exact or Prefix.
    pub kind: PathKind,
    /// The compared path: as written for `Exact`; for `Prefix` without trailing slashes
    /// (`/` becomes the empty string, which matches every path).
    pub path: String,
}

impl PathMatch {
    /// Parses `pathType` and `path` of an `HTTPIngressPath`. A missing path means `/`.
    pub fn parse(path_type: &str, path: Option<&str>) -> Result<Self, PathError> {
        let kind = match path_type {
            "Exact" => PathKind::Exact,
            "Prefix" | "ImplementationSpecific" | "" => PathKind::Prefix,
            other => return Err(PathError::UnknownType(other.to_string())),
        };
        let path = match (kind, path.filter(|p| !p.is_empty())) {
            (PathKind::Exact, None) => return Err(PathError::ExactWithoutPath),
            (PathKind::Prefix, None) => "/",
            (_, Some(p)) => p,
        };
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute(path.to_string()));
        }
        let path = match kind {
            PathKind::Exact => path.to_string(),
            PathKind::Prefix => path.trim_end_matches('/').to_string(),
        };
        Ok(PathMatch { kind, path })
    }

    /// Whether the request path `req` matches.
    pub fn matches(&self, req: &str) -> bool {
        match self.kind {
            PathKind::Exact => req == self.path,
            PathKind::Prefix => prefix_matches(&self.path, req),
        }
    }

    /// Precedence among matching rules: longer first, then `Exact` before `Prefix`.
    pub fn precedence(&self) -> (usize, bool) {
        (self.path.len(), self.kind == PathKind::Exact)
    }
}

/// `prefix` (without trailing `/`) is an element-wise prefix of `req`: `/foo` matches `/foo`,
/// `/foo/` and `/foo/bar`, not `/foobar`. The empty prefix (from `/`) matches everything.
pub fn prefix_matches(prefix: &str, req: &str) -> bool {
    match req.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A rule's host, normalized (lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// No host: every request.
    Any,
    /// One name.
    Exact(String),
    /// `*.suffix`: exactly one more label in front of `suffix` (stored without `*.`).
    Wildcard(String),
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Any => f.write_str("(any)"),
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl HostMatch {
    /// Parses an `IngressRule.host` (or a `tls[].hosts` entry); None or empty is [`HostMatch::Any`].
    pub fn parse(host: Option<&str>) -> Result<Self, HostError> {
        let Some(h) = host.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(HostMatch::Any);
        };
        let h = h.to_ascii_lowercase();
        if let Some(suffix) = h.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(HostError::BadWildcard(h));
            }
            if !valid_dns_name(suffix) {
                return Err(HostError::Invalid(h));
            }
            return Ok(HostMatch::Wildcard(suffix.to_string()));
        }
        if h.contains('*') {
            return Err(HostError::BadWildcard(h));
        }
        if !valid_dns_name(&h) {
            return Err(HostError::Invalid(h));
        }
        Ok(HostMatch::Exact(h))
    }

    /// Whether the (normalized, see [`request_host`]) request host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => wildcard_suffix(host) == Some(suffix.as_str()),
        }
    }
}

/// The part of `host` a single-label wildcard would name: `a.foo.com` → `foo.com`; None for a
/// name of one label (or an empty first label).
pub fn wildcard_suffix(host: &str) -> Option<&str> {
    let (first, rest) = host.split_once('.')?;
    (!first.is_empty() && !rest.is_empty()).then_some(rest)
}

/// The host a request names (from `Host` or the HTTP/2 authority), as rules compare it:
/// lowercase, without port, without a trailing dot. IPv6 literals keep their brackets.
pub fn request_host(authority: &str) -> String {
    let a = authority.trim();
    let host = if a.starts_with('[') {
        match a.find(']') {
            Some(end) => &a[..=end],
            None => a,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, path: &str) -> PathMatch {
        PathMatch::parse(kind, Some(path)).unwrap()
    }

    /// The table of the Kubernetes documentation ("Examples" under "Path types").
    #[test]
    fn upstream_path_table() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("Prefix", "/", "/anything/at/all", true),
            ("Prefix", "/", "/", true),
            ("Exact", "/foo", "/foo", true),
            ("Exact", "/foo", "/bar", false),
            ("Exact", "/foo", "/foo/", false),
            ("Exact", "/foo/", "/foo", false),
            ("Prefix", "/foo", "/foo", true),
            ("Prefix", "/foo", "/foo/", true),
            ("Prefix", "/foo/", "/foo", true),
            ("Prefix", "/foo/", "/foo/", true),
            ("Prefix", "/aaa/bb", "/aaa/bbb", false),
            ("Prefix", "/aaa/bbb", "/aaa/bbb", true),
            ("Prefix", "/aaa/bbb/", "/aaa/bbb", true),
            ("Prefix", "/aaa/bbb", "/aaa/bbb/", true),
            ("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", true),
            ("Prefix", "/aaa/bbb", "/aaa/bbbxyz", false),
            ("Prefix", "/aaa", "/ccc", false),
            ("ImplementationSpecific", "/aaa", "/aaa/x", true),
            ("ImplementationSpecific", "/aaa", "/aaax", false),
        ];
        for (kind, path, req, want) in cases {
            assert_eq!(m(kind, path).matches(req), *want, "{kind} {path} vs {req}");
        }
    }

    #[test]
    fn bad_paths_are_errors() {
        assert_eq!(
            PathMatch::parse("Regex", Some("/x")),
            Err(PathError::UnknownType("Regex".into()))
        );
        assert_eq!(
            PathMatch::parse("Prefix", Some("x")),
            Err(PathError::NotAbsolute("x".into()))
        );
        assert_eq!(
            PathMatch::parse("Exact", None),
            Err(PathError::ExactWithoutPath)
        );
        assert_eq!(PathMatch::parse("Prefix", None).unwrap().path, "");
    }

    #[test]
    fn precedence_longest_then_exact() {
        let exact = m("Exact", "/foo");
        let prefix = m("Prefix", "/foo/");
        assert_eq!(exact.precedence().0, prefix.precedence().0);
        assert!(exact.precedence() > prefix.precedence());
        assert!(m("Prefix", "/foo/bar").precedence() > exact.precedence());
    }

    #[test]
    fn hosts() {
        let w = HostMatch::parse(Some("*.Foo.com")).unwrap();
        assert_eq!(w, HostMatch::Wildcard("foo.com".into()));
        assert!(w.matches("bar.foo.com"));
        assert!(!w.matches("baz.bar.foo.com"), "one label only");
        assert!(!w.matches("foo.com"), "the bare suffix does not match");
        let e = HostMatch::parse(Some("foo.bar.com")).unwrap();
        assert!(e.matches("foo.bar.com"));
        assert!(!e.matches("x.foo.bar.com"));
        assert_eq!(HostMatch::parse(None).unwrap(), HostMatch::Any);
        assert_eq!(HostMatch::parse(Some("")).unwrap(), HostMatch::Any);
        assert!(HostMatch::Any.matches("whatever"));
        assert!(matches!(
            HostMatch::parse(Some("a.*.com")),
            Err(HostError::BadWildcard(_))
        ));
        assert!(matches!(
            HostMatch::parse(Some("foo..com")),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            HostMatch::parse(Some("foo.com:80")),
            Err(HostError::Invalid(_))
        ));
    }

    #[test]
    fn request_hosts() {
        assert_eq!(request_host("Foo.COM:8080"), "foo.com");
        assert_eq!(request_host("foo.com."), "foo.com");
        assert_eq!(request_host("foo.com"), "foo.com");
        assert_eq!(request_host("[::1]:80"), "[::1]");
        assert_eq!(request_host("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(wildcard_suffix("a.b.c"), Some("b.c"));
        assert_eq!(wildcard_suffix("localhost"), None);
    }
}
