//! The routing table, pure: built whole from the served Ingresses and the backends' endpoints,
//! then only read (the proxy swaps in a new one after every change).
//!
//! Lookup: the rules of the exact host, then those of the host's `*.` wildcard, then the rules
//! without host — in each, the longest matching path wins, `Exact` before `Prefix` of the same
//! length, the older Ingress on a tie — then the `defaultBackend` of the oldest Ingress that has
//! one; nothing matching is the controller's 404.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::backends::{backend_key, Backend, ServiceIndex};
use crate::paths::{HostMatch, PathMatch};

/// One path rule of a host.
#[derive(Debug)]
pub struct PathRoute {
    /// What it matches.
    pub path: PathMatch,
    /// Where it goes.
    pub backend: Arc<Backend>,
    /// `namespace/name` of the Ingress it came from.
    pub ingress: String,
}

/// An immutable routing table.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<PathRoute>>,
    wildcard: HashMap<String, Vec<PathRoute>>,
    any: Vec<PathRoute>,
    default_backend: Option<Arc<Backend>>,
    backends: usize,
}

/// An Ingress in the order conflicts are settled: oldest first, then by namespace and name.
pub(crate) fn sort_oldest_first(ingresses: &mut [&Ingress]) {
    ingresses.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// `namespace/name` of an object.
pub(crate) fn full_name(ing: &Ingress) -> String {
    format!(
        "{}/{}",
        ing.metadata.namespace.as_deref().unwrap_or(""),
        ing.metadata.name.as_deref().unwrap_or("")
    )
}

struct Builder<'a, 'b> {
    index: &'b ServiceIndex<'a>,
    backends: HashMap<String, Arc<Backend>>,
    warnings: Vec<String>,
}

impl Builder<'_, '_> {
    fn backend(&mut self, ing: &str, ns: &str, b: &IngressBackend) -> Option<Arc<Backend>> {
        let Some(svc) = &b.service else {
            self.warnings.push(format!(
                "ingress {ing}: only service backends are supported (resource backend skipped)"
            ));
            return None;
        };
        let key = backend_key(ns, svc);
        if let Some(be) = self.backends.get(&key) {
            return Some(be.clone());
        }
        let endpoints = self.index.resolve(ns, svc).unwrap_or_else(|e| {
            self.warnings.push(format!("ingress {ing}: {e}"));
            Vec::new()
        });
        let be = Arc::new(Backend::new(key.clone(), endpoints));
        self.backends.insert(key, be.clone());
        Some(be)
    }
}

impl RouteTable {
    /// Builds the table from the Ingresses this controller serves. Returns the table and a
    /// warning per rule that could not be used (naming its Ingress).
    pub fn build(ingresses: &[&Ingress], index: &ServiceIndex<'_>) -> (Self, Vec<String>) {
        let mut ingresses = ingresses.to_vec();
        sort_oldest_first(&mut ingresses);
        let mut b = Builder {
            index,
            backends: HashMap::new(),
            warnings: Vec::new(),
        };
        let mut table = RouteTable::default();
        let mut seen: HashMap<(HostMatch, PathMatch), String> = HashMap::new();
        let mut default_from: Option<String> = None;
        for ing in ingresses {
            let name = full_name(ing);
            let ns = ing.metadata.namespace.as_deref().unwrap_or("");
            let Some(spec) = &ing.spec else { continue };
            if let Some(def) = &spec.default_backend {
                match &default_from {
                    None => {
                        table.default_backend = b.backend(&name, ns, def);
                        default_from = table.default_backend.as_ref().map(|_| name.clone());
                    }
                    Some(first) => b.warnings.push(format!(
                        "ingress {name}: defaultBackend ignored, {first} already sets one"
                    )),
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = match HostMatch::parse(rule.host.as_deref()) {
                    Ok(h) => h,
                    Err(e) => {
                        b.warnings
                            .push(format!("ingress {name}: rule skipped: {e}"));
                        continue;
                    }
                };
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let path = match PathMatch::parse(&p.path_type, p.path.as_deref()) {
                        Ok(m) => m,
                        Err(e) => {
                            b.warnings
                                .push(format!("ingress {name}: path skipped: {e}"));
                            continue;
                        }
                    };
                    let Some(backend) = b.backend(&name, ns, &p.backend) else {
                        continue;
                    };
                    if let Some(first) = seen.get(&(host.clone(), path.clone())) {
                        b.warnings.push(format!(
                            "ingress {name}: path {:?} of host {host} ignored, {first} routes it",
                            p.path.as_deref().unwrap_or("/")
                        ));
                        continue;
                    }
                    seen.insert((host.clone(), path.clone()), name.clone());
                    let route = PathRoute {
                        path,
                        backend,
                        ingress: name.clone(),
                    };
                    match &host {
                        HostMatch::Any => table.any.push(route),
                        HostMatch::Exact(h) => {
                            table.exact.entry(h.clone()).or_default().push(route)
                        }
                        HostMatch::Wildcard(s) => {
                            table.wildcard.entry(s.clone()).or_default().push(route)
                        }
                    }
                }
            }
        }
        // Stable: ties keep the older Ingress first.
        let order = |v: &mut Vec<PathRoute>| {
            v.sort_by_key(|r| std::cmp::Reverse(r.path.precedence()));
        };
        table.exact.values_mut().for_each(order);
        table.wildcard.values_mut().for_each(order);
        order(&mut table.any);
        table.backends = b.backends.len();
        let mut seen_w = HashSet::new();
        b.warnings.retain(|w| seen_w.insert(w.clone()));
        (table, b.warnings)
    }

    /// The rule answering `host` (normalized, see [`crate::paths::request_host`]) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&PathRoute> {
        fn first<'t>(rules: Option<&'t Vec<PathRoute>>, path: &str) -> Option<&'t PathRoute> {
            rules.into_iter().flatten().find(|r| r.path.matches(path))
        }
        first(self.exact.get(host), path)
            .or_else(|| {
                crate::paths::wildcard_suffix(host).and_then(|s| first(self.wildcard.get(s), path))
            })
            .or_else(|| first(Some(&self.any), path))
    }

    /// The backend answering `host` and `path`: a rule's, else the default backend; None is 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        self.find(host, path)
            .map(|r| &r.backend)
            .or(self.default_backend.as_ref())
    }

    /// Number of distinct backends.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// Number of path rules.
    pub fn rules(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .map(Vec::len)
            .sum::<usize>()
            + self.any.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    /// One Service per backend name, each with one endpoint, so routes are told apart by name.
    fn world(names: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for (i, n) in names.iter().enumerate() {
            svcs.push(
                serde_json::from_value(json!({"metadata": {"namespace": "d", "name": n},
                    "spec": {"ports": [{"name": "http", "port": 80}]}}))
                .unwrap(),
            );
            slices.push(
                serde_json::from_value(json!({"metadata": {"namespace": "d", "name": n,
                        "labels": {"kubernetes.io/service-name": n}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": 1000 + i}],
                    "endpoints": [{"addresses": ["10.0.0.1"]}]}))
                .unwrap(),
            );
        }
        (svcs, slices)
    }

    fn ing(name: &str, ts: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({"metadata": {"namespace": "d", "name": name,
            "creationTimestamp": ts}, "spec": spec}))
        .unwrap()
    }

    fn path(p: &str, t: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": t,
            "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    fn routed(t: &RouteTable, host: &str, p: &str) -> Option<String> {
        t.route(host, p).map(|b| {
            b.name
                .trim_start_matches("d/")
                .trim_end_matches(":80")
                .to_string()
        })
    }

    #[test]
    fn hosts_paths_and_precedence() {
        let (svcs, slices) = world(&["root", "aaa", "bbb", "exact", "wild", "any", "def"]);
        let a = ing(
            "a",
            "2024-01-01T00:00:00Z",
            json!({
            "defaultBackend": {"service": {"name": "def", "port": {"number": 80}}},
            "rules": [
                {"host": "foo.com", "http": {"paths": [
                    path("/", "Prefix", "root"),
                    path("/aaa", "Prefix", "aaa"),
                    path("/aaa/bbb", "ImplementationSpecific", "bbb"),
                    path("/exact", "Exact", "exact"),
                    path("/exact/", "Prefix", "aaa"),
                ]}},
                {"host": "*.foo.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
                {"http": {"paths": [path("/any", "Prefix", "any")]}},
            ]}),
        );
        let s: Vec<&Service> = svcs.iter().collect();
        let e: Vec<&EndpointSlice> = slices.iter().collect();
        let idx = ServiceIndex::new(&s, &e);
        let (t, warnings) = RouteTable::build(&[&a], &idx);
        assert!(warnings.is_empty(), "{warnings:?}");
        let cases = [
            ("foo.com", "/", "root"),
            ("foo.com", "/ccc", "root"),
            ("foo.com", "/aaa", "aaa"),
            ("foo.com", "/aaa/", "aaa"),
            ("foo.com", "/aaa/ccc", "aaa"),
            ("foo.com", "/aaa/bbb", "bbb"),
            ("foo.com", "/aaa/bbb/c", "bbb"),
            ("foo.com", "/aaa/bbbxyz", "aaa"),
            ("foo.com", "/exact", "exact"),
            ("foo.com", "/exact/x", "aaa"),
            ("x.foo.com", "/anything", "wild"),
            ("x.y.foo.com", "/anything", "def"),
            ("x.y.foo.com", "/any/thing", "any"),
            ("other.com", "/any", "any"),
            ("other.com", "/", "def"),
        ];
        for (h, p, want) in cases {
            assert_eq!(routed(&t, h, p).as_deref(), Some(want), "{h}{p}");
        }
        assert_eq!(t.rules(), 7);
    }

    #[test]
    fn fallthrough_to_hostless_then_404() {
        let (svcs, slices) = world(&["api", "any"]);
        let s: Vec<&Service> = svcs.iter().collect();
        let e: Vec<&EndpointSlice> = slices.iter().collect();
        let idx = ServiceIndex::new(&s, &e);
        let a = ing(
            "a",
            "2024-01-01T00:00:00Z",
            json!({"rules": [
            {"host": "foo.com", "http": {"paths": [path("/api", "Exact", "api")]}},
            {"http": {"paths": [path("/other", "Prefix", "any")]}}]}),
        );
        let (t, _) = RouteTable::build(&[&a], &idx);
        assert_eq!(routed(&t, "foo.com", "/api").as_deref(), Some("api"));
        assert_eq!(routed(&t, "foo.com", "/other").as_deref(), Some("any"));
        assert_eq!(routed(&t, "foo.com", "/nothing"), None, "404");
        assert_eq!(routed(&t, "foo.com", "/api/x"), None, "Exact only");
    }

    #[test]
    fn older_ingress_wins_conflicts_and_bad_rules_warn() {
        let (svcs, slices) = world(&["old", "new"]);
        let s: Vec<&Service> = svcs.iter().collect();
        let e: Vec<&EndpointSlice> = slices.iter().collect();
        let idx = ServiceIndex::new(&s, &e);
        let new = ing(
            "new",
            "2024-02-01T00:00:00Z",
            json!({
            "defaultBackend": {"service": {"name": "new", "port": {"number": 80}}},
            "rules": [{"host": "foo.com", "http": {"paths": [
                path("/x", "Prefix", "new"),
                path("/y", "Regex", "new"),
                path("/z", "Prefix", "missing"),
            ]}}, {"host": "a.*.com", "http": {"paths": [path("/", "Prefix", "new")]}}]}),
        );
        let old = ing(
            "old",
            "2024-01-01T00:00:00Z",
            json!({
            "defaultBackend": {"service": {"name": "old", "port": {"number": 80}}},
            "rules": [{"host": "foo.com", "http": {"paths": [path("/x/", "Prefix", "old")]}}]}),
        );
        let (t, warnings) = RouteTable::build(&[&new, &old], &idx);
        assert_eq!(routed(&t, "foo.com", "/x").as_deref(), Some("old"));
        assert_eq!(routed(&t, "nothing.com", "/").as_deref(), Some("old"));
        let z = t.route("foo.com", "/z").unwrap();
        assert!(z.endpoints.is_empty(), "missing service: 503 backend");
        let joined = warnings.join("\n");
        for w in [
            "ingress d/new: defaultBackend ignored, d/old already sets one",
            "ingress d/new: path skipped: unknown pathType \"Regex\"",
            "ingress d/new: service d/missing not found",
            "ingress d/new: path \"/x\" of host foo.com ignored, d/old routes it",
            "ingress d/new: rule skipped",
        ] {
            assert!(joined.contains(w), "missing {w:?} in\n{joined}");
        }
    }
}
