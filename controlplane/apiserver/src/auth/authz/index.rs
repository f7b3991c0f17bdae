//! The in-memory authorization index: every Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding (bindings indexed by subject, so a decision looks only at the bindings
//! naming the user or one of its groups), and the node → object graph of bound pods that the
//! Node authorizer reads (with the claim ↔ volume binds of [`super::volumes`]). Filled from store
//! values (`apply_put`/`apply_delete`); the watch that feeds it lives in [`super::cache`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::node::{pod_refs, PodRefs, RefKey, RefKind};
use super::rbac::{rule_allows, PolicyRule, Request};
use super::volumes::VolumeIndex;
use crate::auth::{Attributes, UserInfo};

/// Store key prefix of the RBAC kinds.
pub const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";
/// Store key prefix of pods.
pub const PODS_PREFIX: &str = "/registry/core/pods/";
pub use super::volumes::{PVCS_PREFIX, PVS_PREFIX};

/// The store prefixes the index is filled from.
pub const PREFIXES: [&str; 4] = [RBAC_PREFIX, PODS_PREFIX, PVCS_PREFIX, PVS_PREFIX];

/// What a binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// A namespaced Role (RoleBindings only).
    Role,
    /// A ClusterRole.
    ClusterRole,
}

/// One subject of a binding.
#[derive(Debug, Clone)]
pub struct Subject {
    /// User name this subject applies to (Users and ServiceAccounts), or the group.
    pub user: Option<String>,
    /// Group this subject applies to.
    pub group: Option<String>,
    /// Upstream's description (`User "jane"`, `ServiceAccount "sa/ns"`).
    pub desc: String,
}

impl Subject {
    fn applies(&self, u: &UserInfo) -> bool {
        self.user.as_deref() == Some(u.name.as_str())
            || self.group.as_deref().is_some_and(|g| u.in_group(g))
    }
}

/// One RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Namespace (`""` for a ClusterRoleBinding).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kind of the referenced role.
    pub role_kind: RoleKind,
    /// Name of the referenced role.
    pub role_name: String,
    /// Subjects.
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// Upstream's description of the binding for allow reasons.
    pub fn describe(&self, subject: &Subject) -> String {
        let kind = match self.role_kind {
            RoleKind::Role => "Role",
            RoleKind::ClusterRole => "ClusterRole",
        };
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {:?} of {kind} {:?} to {}",
                self.name, self.role_name, subject.desc
            )
        } else {
            format!(
                "RoleBinding {:?} of {kind} {:?} to {}",
                format!("{}/{}", self.namespace, self.name),
                self.role_name,
                subject.desc
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct RawRole {
    metadata: RawMeta,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoleRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSubject {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBinding {
    metadata: RawMeta,
    role_ref: RawRoleRef,
    #[serde(default)]
    subjects: Option<Vec<RawSubject>>,
}

/// Parses a binding object (stored JSON or a request body).
pub fn parse_binding(v: &Value) -> Option<Binding> {
    let raw: RawBinding = serde_json::from_value(v.clone()).ok()?;
    Some(binding_from(raw))
}

fn binding_from(raw: RawBinding) -> Binding {
    let ns = raw.metadata.namespace.unwrap_or_default();
    let subjects = raw
        .subjects
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| subject_from(s, &ns))
        .collect();
    Binding {
        role_kind: if raw.role_ref.kind == "Role" {
            RoleKind::Role
        } else {
            RoleKind::ClusterRole
        },
        role_name: raw.role_ref.name,
        namespace: ns,
        name: raw.metadata.name,
        subjects,
    }
}

/// Upstream's `appliesToUser` keys and `describeSubject`.
fn subject_from(s: RawSubject, binding_ns: &str) -> Option<Subject> {
    match s.kind.as_str() {
        "User" => Some(Subject {
            desc: format!("User {:?}", s.name),
            user: Some(s.name),
            group: None,
        }),
        "Group" => Some(Subject {
            desc: format!("Group {:?}", s.name),
            group: Some(s.name),
            user: None,
        }),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| binding_ns.to_string());
            if ns.is_empty() {
                return None;
            }
            Some(Subject {
                desc: format!("ServiceAccount {:?}", format!("{}/{ns}", s.name)),
                user: Some(format!(
                    "{}{ns}:{}",
                    crate::auth::user::SERVICE_ACCOUNT_PREFIX,
                    s.name
                )),
                group: None,
            })
        }
        _ => None,
    }
}

/// Bindings of one scope (the cluster, or one namespace) by subject.
#[derive(Debug, Default)]
struct SubjectIndex {
    by_user: HashMap<String, BTreeSet<String>>,
    by_group: HashMap<String, BTreeSet<String>>,
}

impl SubjectIndex {
    fn add(&mut self, b: &Binding) {
        for s in &b.subjects {
            if let Some(u) = &s.user {
                self.by_user
                    .entry(u.clone())
                    .or_default()
                    .insert(b.name.clone());
            }
            if let Some(g) = &s.group {
                self.by_group
                    .entry(g.clone())
                    .or_default()
                    .insert(b.name.clone());
            }
        }
    }

    fn remove(&mut self, b: &Binding) {
        fn drop_from(m: &mut HashMap<String, BTreeSet<String>>, k: &str, name: &str) {
            if let Some(set) = m.get_mut(k) {
                set.remove(name);
                if set.is_empty() {
                    m.remove(k);
                }
            }
        }
        for s in &b.subjects {
            if let Some(u) = &s.user {
                drop_from(&mut self.by_user, u, &b.name);
            }
            if let Some(g) = &s.group {
                drop_from(&mut self.by_group, g, &b.name);
            }
        }
    }

    /// Names of bindings with a subject naming `u` (its name or a group), each once (a binding
    /// naming the user and one of its groups is skipped where it repeats), without allocating.
    fn names_for<'a>(&'a self, u: &'a UserInfo) -> impl Iterator<Item = &'a String> + 'a {
        let user_set = self.by_user.get(&u.name);
        let by_user = user_set.into_iter().flatten();
        let by_group = u.groups.iter().enumerate().flat_map(move |(i, g)| {
            self.by_group
                .get(g)
                .into_iter()
                .flatten()
                .filter(move |name| {
                    !user_set.is_some_and(|s| s.contains(*name))
                        && !u.groups[..i]
                            .iter()
                            .any(|pg| self.by_group.get(pg).is_some_and(|s| s.contains(*name)))
                })
        });
        by_user.chain(by_group)
    }

    fn is_empty(&self) -> bool {
        self.by_user.is_empty() && self.by_group.is_empty()
    }
}

/// Everything authorization decides on.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    /// Roles by namespace, then name (nested so lookups by `&str` never allocate).
    roles: HashMap<String, HashMap<String, Arc<Vec<PolicyRule>>>>,
    cluster_bindings: HashMap<String, Arc<Binding>>,
    /// RoleBindings by namespace, then name.
    bindings: HashMap<String, HashMap<String, Arc<Binding>>>,
    cluster_subjects: SubjectIndex,
    ns_subjects: HashMap<String, SubjectIndex>,
    pods: HashMap<(String, String), PodRefs>,
    node_refs: HashMap<String, HashMap<RefKey, u32>>,
    volumes: VolumeIndex,
}

/// Where a rule came from, when visiting a user's rules.
pub struct Source<'a> {
    /// The binding.
    pub binding: &'a Binding,
    /// The subject of the binding that applies to the user.
    pub subject: &'a Subject,
}

impl Index {
    /// Applies a put of a stored object at `key`.
    pub fn apply_put(&mut self, key: &str, value: &[u8]) {
        if let Some(rest) = key.strip_prefix(PODS_PREFIX) {
            self.remove_pod(rest);
            if let Ok(v) = serde_json::from_slice::<Value>(value) {
                if let Some(refs) = pod_refs(&v) {
                    self.add_pod(rest, refs);
                }
            }
            return;
        }
        if self.volumes.apply_put(key, value) {
            return;
        }
        let Some(rest) = key.strip_prefix(RBAC_PREFIX) else {
            return;
        };
        let Some((plural, _)) = rest.split_once('/') else {
            return;
        };
        self.apply_delete(key);
        match plural {
            "clusterroles" | "roles" => {
                let Ok(raw) = serde_json::from_slice::<RawRole>(value) else {
                    return;
                };
                let rules = Arc::new(raw.rules.unwrap_or_default());
                match raw.metadata.namespace.filter(|n| !n.is_empty()) {
                    Some(ns) if plural == "roles" => {
                        self.roles
                            .entry(ns)
                            .or_default()
                            .insert(raw.metadata.name, rules);
                    }
                    None if plural == "clusterroles" => {
                        self.cluster_roles.insert(raw.metadata.name, rules);
                    }
                    _ => {}
                }
            }
            "clusterrolebindings" | "rolebindings" => {
                let Ok(raw) = serde_json::from_slice::<RawBinding>(value) else {
                    return;
                };
                let b = binding_from(raw);
                if plural == "clusterrolebindings" && b.namespace.is_empty() {
                    self.cluster_subjects.add(&b);
                    self.cluster_bindings.insert(b.name.clone(), Arc::new(b));
                } else if plural == "rolebindings" && !b.namespace.is_empty() {
                    self.ns_subjects
                        .entry(b.namespace.clone())
                        .or_default()
                        .add(&b);
                    self.bindings
                        .entry(b.namespace.clone())
                        .or_default()
                        .insert(b.name.clone(), Arc::new(b));
                }
            }
            _ => {}
        }
    }

    /// Applies a delete of the object at `key`.
    pub fn apply_delete(&mut self, key: &str) {
        if let Some(rest) = key.strip_prefix(PODS_PREFIX) {
            self.remove_pod(rest);
            return;
        }
        if self.volumes.apply_delete(key) {
            return;
        }
        let Some(rest) = key.strip_prefix(RBAC_PREFIX) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["clusterroles", name] => {
                self.cluster_roles.remove(*name);
            }
            ["roles", ns, name] => {
                if let Some(m) = self.roles.get_mut(*ns) {
                    m.remove(*name);
                    if m.is_empty() {
                        self.roles.remove(*ns);
                    }
                }
            }
            ["clusterrolebindings", name] => {
                if let Some(b) = self.cluster_bindings.remove(*name) {
                    self.cluster_subjects.remove(&b);
                }
            }
            ["rolebindings", ns, name] => {
                let mut removed = None;
                if let Some(m) = self.bindings.get_mut(*ns) {
                    removed = m.remove(*name);
                    if m.is_empty() {
                        self.bindings.remove(*ns);
                    }
                }
                if let Some(b) = removed {
                    if let Some(idx) = self.ns_subjects.get_mut(*ns) {
                        idx.remove(&b);
                        if idx.is_empty() {
                            self.ns_subjects.remove(*ns);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn add_pod(&mut self, key_rest: &str, refs: PodRefs) {
        let counts = self.node_refs.entry(refs.node.clone()).or_default();
        for r in &refs.refs {
            *counts.entry(r.clone()).or_default() += 1;
        }
        if let Some((ns, name)) = key_rest.split_once('/') {
            self.pods.insert((ns.to_string(), name.to_string()), refs);
        }
    }

    fn remove_pod(&mut self, key_rest: &str) {
        let Some((ns, name)) = key_rest.split_once('/') else {
            return;
        };
        let Some(old) = self.pods.remove(&(ns.to_string(), name.to_string())) else {
            return;
        };
        if let Some(counts) = self.node_refs.get_mut(&old.node) {
            for r in &old.refs {
                if let Some(c) = counts.get_mut(r) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(r);
                    }
                }
            }
            if counts.is_empty() {
                self.node_refs.remove(&old.node);
            }
        }
    }

    /// Whether a pod bound to `node` refers to `obj` (or is `obj`).
    pub fn node_has(&self, node: &str, obj: &RefKey) -> bool {
        self.node_refs
            .get(node)
            .is_some_and(|m| m.contains_key(obj))
    }

    /// Whether a pod bound to `node` uses a claim bound to the PersistentVolume `volume`
    /// (upstream's pod → pvc → pv path).
    pub fn node_has_volume(&self, node: &str, volume: &str) -> bool {
        self.volumes.bound_claim(volume).is_some_and(|(ns, claim)| {
            self.node_has(node, &(RefKind::Pvc, ns.clone(), claim.clone()))
        })
    }

    /// The rules of a binding's role, or upstream's not-found text.
    pub fn role_rules(&self, b: &Binding) -> Result<&Arc<Vec<PolicyRule>>, String> {
        match b.role_kind {
            RoleKind::ClusterRole => self.cluster_roles.get(&b.role_name).ok_or_else(|| {
                format!(
                    "clusterrole.rbac.authorization.k8s.io {:?} not found",
                    b.role_name
                )
            }),
            RoleKind::Role => self.role(&b.namespace, &b.role_name).ok_or_else(|| {
                format!("role.rbac.authorization.k8s.io {:?} not found", b.role_name)
            }),
        }
    }

    /// The rules of a ClusterRole.
    pub fn cluster_role(&self, name: &str) -> Option<&Arc<Vec<PolicyRule>>> {
        self.cluster_roles.get(name)
    }

    /// The rules of a Role.
    pub fn role(&self, ns: &str, name: &str) -> Option<&Arc<Vec<PolicyRule>>> {
        self.roles.get(ns).and_then(|m| m.get(name))
    }

    /// Upstream's `VisitRulesFor`: the rules of every ClusterRoleBinding naming `u`, then of every
    /// RoleBinding in `namespace` naming `u`; `visit` returns false to stop. Role resolution
    /// errors are collected.
    pub fn visit_rules<F>(
        &self,
        u: &UserInfo,
        namespace: &str,
        errors: &mut Vec<String>,
        mut visit: F,
    ) where
        F: FnMut(&Source, &PolicyRule) -> bool,
    {
        let scopes = std::iter::once(("", &self.cluster_subjects)).chain(
            (!namespace.is_empty())
                .then(|| self.ns_subjects.get(namespace).map(|s| (namespace, s)))
                .flatten(),
        );
        for (ns, idx) in scopes {
            for name in idx.names_for(u) {
                let b = if ns.is_empty() {
                    self.cluster_bindings.get(name)
                } else {
                    self.bindings.get(ns).and_then(|m| m.get(name))
                };
                let Some(b) = b else { continue };
                let Some(subject) = b.subjects.iter().find(|s| s.applies(u)) else {
                    continue;
                };
                let rules = match self.role_rules(b) {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let src = Source {
                    binding: b,
                    subject,
                };
                for r in rules.iter() {
                    if !visit(&src, r) {
                        return;
                    }
                }
            }
        }
    }

    /// RBAC's decision: the allowing binding's description, or the resolution errors.
    pub fn rbac_allows(&self, a: &Attributes) -> Result<String, Vec<String>> {
        let req = Request::new(a);
        let mut errors = Vec::new();
        let mut reason = None;
        self.visit_rules(&a.user, &a.namespace, &mut errors, |src, rule| {
            if rule_allows(&req, rule) {
                reason = Some(format!(
                    "RBAC: allowed by {}",
                    src.binding.describe(src.subject)
                ));
                return false;
            }
            true
        });
        reason.ok_or(errors)
    }

    /// Every rule `u` holds in `namespace` (cluster-wide ones included), with resolution errors.
    pub fn rules_for(&self, u: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit_rules(u, namespace, &mut errors, |_, r| {
            rules.push(r.clone());
            true
        });
        (rules, errors)
    }

    /// Numbers of objects indexed (roles, cluster roles, bindings, cluster bindings, pods).
    pub fn counts(&self) -> [usize; 5] {
        [
            self.roles.values().map(HashMap::len).sum(),
            self.cluster_roles.len(),
            self.bindings.values().map(HashMap::len).sum(),
            self.cluster_bindings.len(),
            self.pods.len(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(idx: &mut Index, key: &str, v: Value) {
        idx.apply_put(key, &serde_json::to_vec(&v).unwrap());
    }

    fn attrs(user: UserInfo, verb: &str, ns: &str, res: &str) -> Attributes {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            resource: res.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bindings_by_subject() {
        let mut idx = Index::default();
        put(
            &mut idx,
            "/registry/rbac.authorization.k8s.io/clusterroles/view",
            json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        put(
            &mut idx,
            "/registry/rbac.authorization.k8s.io/roles/a/deleter",
            json!({"metadata": {"name": "deleter", "namespace": "a"}, "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        put(
            &mut idx,
            "/registry/rbac.authorization.k8s.io/rolebindings/a/jane-view",
            json!({"metadata": {"name": "jane-view", "namespace": "a"},
                "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
                "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "bot"}]}),
        );
        put(
            &mut idx,
            "/registry/rbac.authorization.k8s.io/rolebindings/a/devs-delete",
            json!({"metadata": {"name": "devs-delete", "namespace": "a"},
                "roleRef": {"kind": "Role", "name": "deleter"},
                "subjects": [{"kind": "Group", "name": "devs"}]}),
        );
        let jane = UserInfo::new("jane", &[]);
        assert_eq!(
            idx.rbac_allows(&attrs(jane.clone(), "list", "a", "pods")),
            Ok(r#"RBAC: allowed by RoleBinding "a/jane-view" of ClusterRole "view" to User "jane""#.into())
        );
        assert!(idx
            .rbac_allows(&attrs(jane.clone(), "list", "b", "pods"))
            .is_err());
        assert!(idx
            .rbac_allows(&attrs(jane.clone(), "list", "", "pods"))
            .is_err());
        assert!(idx
            .rbac_allows(&attrs(jane.clone(), "delete", "a", "pods"))
            .is_err());
        let dev = UserInfo::new("bob", &["devs"]);
        assert!(idx.rbac_allows(&attrs(dev, "delete", "a", "pods")).is_ok());
        // The ServiceAccount subject's namespace defaults to the binding's.
        let bot = UserInfo::new("system:serviceaccount:a:bot", &[]);
        assert_eq!(
            idx.rbac_allows(&attrs(bot, "get", "a", "pods")),
            Ok(r#"RBAC: allowed by RoleBinding "a/jane-view" of ClusterRole "view" to ServiceAccount "bot/a""#.into())
        );
        // A binding to a missing role: the resolution error is the reason.
        put(
            &mut idx,
            "/registry/rbac.authorization.k8s.io/clusterrolebindings/x",
            json!({"metadata": {"name": "x"}, "roleRef": {"kind": "ClusterRole", "name": "nope"},
                "subjects": [{"kind": "User", "name": "jane"}]}),
        );
        assert_eq!(
            idx.rbac_allows(&attrs(jane.clone(), "get", "", "nodes")),
            Err(vec![
                r#"clusterrole.rbac.authorization.k8s.io "nope" not found"#.to_string()
            ])
        );
        // Deleting removes every trace.
        idx.apply_delete("/registry/rbac.authorization.k8s.io/rolebindings/a/jane-view");
        idx.apply_delete("/registry/rbac.authorization.k8s.io/clusterrolebindings/x");
        assert!(idx.rbac_allows(&attrs(jane, "list", "a", "pods")).is_err());
        assert_eq!(idx.counts(), [1, 1, 1, 0, 0]);
        assert!(idx.cluster_subjects.is_empty());
    }

    /// 1,000 RoleBindings (and 1,000 users): a decision looks only at the caller's bindings.
    #[test]
    fn decisions_stay_cheap_with_many_bindings() {
        let mut idx = Index::default();
        put(
            &mut idx,
            "/registry/rbac.authorization.k8s.io/clusterroles/view",
            json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        for i in 0..1000 {
            let ns = format!("ns{}", i % 50);
            put(
                &mut idx,
                &format!("/registry/rbac.authorization.k8s.io/rolebindings/{ns}/b{i}"),
                json!({"metadata": {"name": format!("b{i}"), "namespace": ns},
                    "roleRef": {"kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "User", "name": format!("user{i}")}, {"kind": "Group", "name": "everyone"}]}),
            );
        }
        let u = UserInfo::new("user999", &["everyone"]);
        let allow = attrs(u.clone(), "list", "ns49", "pods");
        let deny = attrs(u, "delete", "ns49", "pods");
        let n = 20_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(idx.rbac_allows(&allow).is_ok());
        }
        let per_allow = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(idx.rbac_allows(&deny).is_err());
        }
        let per_deny = start.elapsed() / n;
        eprintln!("allow {per_allow:?}, deny (20 bindings visited) {per_deny:?} per decision");
        // Generous bounds for unoptimized builds on a loaded machine.
        assert!(
            per_allow < std::time::Duration::from_millis(1),
            "{per_allow:?}"
        );
        assert!(
            per_deny < std::time::Duration::from_millis(1),
            "{per_deny:?}"
        );
    }
}
