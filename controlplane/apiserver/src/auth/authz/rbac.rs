//! RBAC rules as upstream evaluates them (`pkg/apis/rbac/v1/evaluation_helpers.go` and
//! `pkg/registry/rbac/validation`): matching a request against a rule, whether one rule set
//! covers another (escalation checks), breaking rules down and compacting them for messages.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize};

use super::message::go_quote_list;
use crate::auth::Attributes;

/// `*` in verbs, API groups and resources.
pub const ALL: &str = "*";

/// One `rbac.authorization.k8s.io/v1` PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`*` = all).
    #[serde(default, deserialize_with = "null_vec")]
    pub verbs: Vec<String>,
    /// API groups (`""` = core, `*` = all).
    #[serde(
        default,
        deserialize_with = "null_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub api_groups: Vec<String>,
    /// Resources: `pods`, `pods/log`, `*/scale`, `*`.
    #[serde(
        default,
        deserialize_with = "null_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<String>,
    /// Object names (empty = all).
    #[serde(
        default,
        deserialize_with = "null_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/api/*`).
    #[serde(
        default,
        rename = "nonResourceURLs",
        deserialize_with = "null_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn null_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl PolicyRule {
    /// A resource rule (upstream's `NewRule(verbs...).Groups(...).Resources(...)`).
    pub fn new(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        PolicyRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            ..Default::default()
        }
    }

    /// A non-resource rule.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        PolicyRule {
            verbs: v(verbs),
            non_resource_urls: v(urls),
            ..Default::default()
        }
    }

    /// Restricts the rule to these object names.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = v(names);
        self
    }

    /// Upstream's `CompactString` (escalation messages):
    /// `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:{}", go_quote_list(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:{}", go_quote_list(&self.resources)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!(
                "NonResourceURLs:{}",
                go_quote_list(&self.non_resource_urls)
            ));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!(
                "ResourceNames:{}",
                go_quote_list(&self.resource_names)
            ));
        }
        if !self.verbs.is_empty() {
            parts.push(format!("Verbs:{}", go_quote_list(&self.verbs)));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

/// Upstream's `VerbMatches`.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

/// Upstream's `APIGroupMatches`.
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == ALL || g == group)
}

/// Upstream's `ResourceMatches`: `*`, the exact `resource[/subresource]`, or `*/subresource`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == ALL
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// Upstream's `ResourceNameMatches`: no names means every name (a request without a name, such
/// as a create or a list, matches only rules without names).
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

/// Upstream's `NonResourceURLMatches`: `*`, exact, or a `prefix*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == ALL || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// A request reduced to what rule matching reads (the combined resource computed once).
pub struct Request<'a> {
    /// The attributes.
    pub attrs: &'a Attributes,
    /// `resource` or `resource/subresource`.
    pub combined: std::borrow::Cow<'a, str>,
}

impl<'a> Request<'a> {
    /// Prepares `attrs` for matching against many rules.
    pub fn new(attrs: &'a Attributes) -> Self {
        let combined = if attrs.subresource.is_empty() {
            std::borrow::Cow::Borrowed(attrs.resource.as_str())
        } else {
            std::borrow::Cow::Owned(attrs.full_resource())
        };
        Request { attrs, combined }
    }
}

/// Upstream's `RuleAllows`.
pub fn rule_allows(req: &Request, rule: &PolicyRule) -> bool {
    let a = req.attrs;
    if a.resource_request {
        verb_matches(rule, &a.verb)
            && api_group_matches(rule, &a.api_group)
            && resource_matches(rule, &req.combined, &a.subresource)
            && resource_name_matches(rule, &a.name)
    } else {
        verb_matches(rule, &a.verb) && non_resource_url_matches(rule, &a.path)
    }
}

/// Whether any of `rules` allows `attrs` (upstream's `RulesAllow`).
pub fn rules_allow(attrs: &Attributes, rules: &[PolicyRule]) -> bool {
    let req = Request::new(attrs);
    rules.iter().any(|r| rule_allows(&req, r))
}

/// Upstream's `BreakdownRule`: one rule per group × resource × verb (× name), and per
/// non-resource URL × verb.
pub fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for verb in &rule.verbs {
                let one = PolicyRule {
                    api_groups: vec![g.clone()],
                    resources: vec![r.clone()],
                    verbs: vec![verb.clone()],
                    ..Default::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(one);
                } else {
                    for n in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: vec![n.clone()],
                            ..one.clone()
                        });
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: vec![u.clone()],
                verbs: vec![verb.clone()],
                ..Default::default()
            });
        }
    }
    out
}

fn resource_covers_all(set: &[String], covers: &[String]) -> bool {
    if has(set, ALL) || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        if has(set, path) {
            return true;
        }
        match path.split_once('/') {
            Some((_, sub)) => has(set, &format!("*/{sub}")),
            None => false,
        }
    })
}

fn non_resource_url_covers(owner: &str, sub: &str) -> bool {
    owner == sub || (owner.ends_with('*') && sub.starts_with(owner.trim_end_matches('*')))
}

fn non_resource_urls_cover_all(set: &[String], covers: &[String]) -> bool {
    covers
        .iter()
        .all(|p| set.iter().any(|o| non_resource_url_covers(o, p)))
}

/// Upstream's `ruleCovers`: whether `owner` grants everything `sub` grants.
pub fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, ALL) || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = non_resource_urls_cover_all(&owner.non_resource_urls, &sub.non_resource_urls);
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// Upstream's `Covers`: whether `owner` covers every rule of `requested`, and the (broken-down)
/// rules it does not cover.
pub fn covers(owner: &[PolicyRule], requested: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    for r in requested {
        for sub in breakdown(r) {
            if !owner.iter().any(|o| rule_covers(o, &sub)) && seen.insert(sub.clone()) {
                missing.push(sub);
            }
        }
    }
    (missing.is_empty(), missing)
}

/// Upstream's `CompactRules`: simple rules (one group, one resource, at most one name, verbs)
/// on the same target are merged into one rule with all their verbs.
pub fn compact(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let is_simple = r.api_groups.len() == 1
            && r.resources.len() == 1
            && r.resource_names.len() <= 1
            && r.non_resource_urls.is_empty()
            && !r.verbs.is_empty();
        if !is_simple {
            out.push(r.clone());
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == r.api_groups
                && s.resources == r.resources
                && s.resource_names == r.resource_names
        }) {
            Some(s) => s.verbs.extend(r.verbs.iter().cloned()),
            None => simple.push(r.clone()),
        }
    }
    out.extend(simple);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::new("u", &[]),
            verb: verb.into(),
            resource_request: true,
            namespace: "ns".into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn url(verb: &str, path: &str) -> Attributes {
        Attributes {
            user: UserInfo::new("u", &[]),
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn allows(rule: &PolicyRule, a: &Attributes) -> bool {
        rules_allow(a, std::slice::from_ref(rule))
    }

    // Mirrors upstream's rbac/v1 evaluation_helpers and RuleAllows tests.
    #[test]
    fn rule_matching_table() {
        let cases: Vec<(PolicyRule, Attributes, bool)> = vec![
            (
                PolicyRule::new(&["get"], &[""], &["pods"]),
                res("get", "", "pods", "", "a"),
                true,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["pods"]),
                res("list", "", "pods", "", ""),
                false,
            ),
            (
                PolicyRule::new(&["*"], &[""], &["pods"]),
                res("deletecollection", "", "pods", "", ""),
                true,
            ),
            (
                PolicyRule::new(&["get"], &["*"], &["deployments"]),
                res("get", "apps", "deployments", "", "d"),
                true,
            ),
            (
                PolicyRule::new(&["get"], &["apps"], &["deployments"]),
                res("get", "extensions", "deployments", "", "d"),
                false,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["*"]),
                res("get", "", "secrets", "", "s"),
                true,
            ),
            // Subresources need their own grant.
            (
                PolicyRule::new(&["get"], &[""], &["pods"]),
                res("get", "", "pods", "log", "p"),
                false,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["pods/log"]),
                res("get", "", "pods", "log", "p"),
                true,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["*/log"]),
                res("get", "", "pods", "log", "p"),
                true,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["*/log"]),
                res("get", "", "pods", "", "p"),
                false,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["*/status"]),
                res("get", "", "pods", "log", "p"),
                false,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["*"]),
                res("get", "", "pods", "log", "p"),
                true,
            ),
            // `pods/*` is not a wildcard upstream.
            (
                PolicyRule::new(&["get"], &[""], &["pods/*"]),
                res("get", "", "pods", "log", "p"),
                false,
            ),
            // Resource names.
            (
                PolicyRule::new(&["get"], &[""], &["secrets"]).names(&["a"]),
                res("get", "", "secrets", "", "a"),
                true,
            ),
            (
                PolicyRule::new(&["get"], &[""], &["secrets"]).names(&["a"]),
                res("get", "", "secrets", "", "b"),
                false,
            ),
            (
                PolicyRule::new(&["list"], &[""], &["secrets"]).names(&["a"]),
                res("list", "", "secrets", "", ""),
                false,
            ),
            (
                PolicyRule::new(&["create"], &[""], &["secrets"]).names(&["a"]),
                res("create", "", "secrets", "", ""),
                false,
            ),
            // A list by field selector metadata.name is authorized as that name.
            (
                PolicyRule::new(&["list"], &[""], &["secrets"]).names(&["a"]),
                res("list", "", "secrets", "", "a"),
                true,
            ),
            // Non-resource URLs.
            (
                PolicyRule::urls(&["get"], &["/healthz"]),
                url("get", "/healthz"),
                true,
            ),
            (
                PolicyRule::urls(&["get"], &["/healthz"]),
                url("get", "/healthz/ping"),
                false,
            ),
            (
                PolicyRule::urls(&["get"], &["/healthz*"]),
                url("get", "/healthz/ping"),
                true,
            ),
            (
                PolicyRule::urls(&["get"], &["/api/*"]),
                url("get", "/api/v1"),
                true,
            ),
            (
                PolicyRule::urls(&["get"], &["/api/*"]),
                url("get", "/api"),
                false,
            ),
            (
                PolicyRule::urls(&["*"], &["*"]),
                url("post", "/anything"),
                true,
            ),
            (
                PolicyRule::urls(&["get"], &["/healthz"]),
                url("post", "/healthz"),
                false,
            ),
            // A resource rule never matches a path, nor a URL rule a resource.
            (
                PolicyRule::new(&["*"], &["*"], &["*"]),
                url("get", "/healthz"),
                false,
            ),
            (
                PolicyRule::urls(&["*"], &["*"]),
                res("get", "", "pods", "", "p"),
                false,
            ),
        ];
        for (i, (rule, a, want)) in cases.iter().enumerate() {
            assert_eq!(allows(rule, a), *want, "case {i}: {rule:?} vs {a:?}");
        }
    }

    #[test]
    fn covers_table() {
        let star = PolicyRule::new(&["*"], &["*"], &["*"]);
        let get_pods = PolicyRule::new(&["get"], &[""], &["pods"]);
        assert!(covers(std::slice::from_ref(&star), std::slice::from_ref(&get_pods)).0);
        assert!(!covers(std::slice::from_ref(&get_pods), std::slice::from_ref(&star)).0);
        // Owner with names does not cover a rule without names.
        let named = PolicyRule::new(&["get"], &[""], &["pods"]).names(&["a"]);
        assert!(
            !covers(
                std::slice::from_ref(&named),
                std::slice::from_ref(&get_pods)
            )
            .0
        );
        assert!(
            covers(
                std::slice::from_ref(&get_pods),
                std::slice::from_ref(&named)
            )
            .0
        );
        // */subresource covers any resource's subresource.
        let any_status = PolicyRule::new(&["get"], &[""], &["*/status"]);
        let pod_status = PolicyRule::new(&["get"], &[""], &["pods/status"]);
        assert!(
            covers(
                std::slice::from_ref(&any_status),
                std::slice::from_ref(&pod_status)
            )
            .0
        );
        // URL prefixes.
        let api = PolicyRule::urls(&["get"], &["/api/*"]);
        assert!(
            covers(
                std::slice::from_ref(&api),
                &[PolicyRule::urls(&["get"], &["/api/v1"])]
            )
            .0
        );
        assert!(
            !covers(
                std::slice::from_ref(&api),
                &[PolicyRule::urls(&["get"], &["/apis"])]
            )
            .0
        );
        // The missing rules are the broken-down ones not held.
        let (ok, missing) = covers(
            std::slice::from_ref(&get_pods),
            &[PolicyRule::new(
                &["get", "list"],
                &[""],
                &["pods", "secrets"],
            )],
        );
        assert!(!ok);
        assert_eq!(missing.len(), 3);
        let compacted = compact(&missing);
        let mut texts: Vec<String> = compacted.iter().map(PolicyRule::compact_string).collect();
        texts.sort();
        assert_eq!(
            texts,
            vec![
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["list"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}"#,
            ]
        );
    }

    #[test]
    fn parses_null_fields() {
        let r: PolicyRule =
            serde_json::from_str(r#"{"verbs":["get"],"apiGroups":null,"nonResourceURLs":["/x"]}"#)
                .unwrap();
        assert_eq!(r, PolicyRule::urls(&["get"], &["/x"]));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"verbs":["get"],"nonResourceURLs":["/x"]})
        );
    }
}
