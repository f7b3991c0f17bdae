//! RBAC's privilege-escalation prevention (upstream's `pkg/registry/rbac/*/policybased` and
//! `validation.ConfirmNoEscalation`): a Role or ClusterRole may only grant what its writer
//! holds (unless the writer may `escalate` it), a binding may only bind a role whose rules the
//! writer holds (unless the writer may `bind` it). `system:masters` is never checked.

use serde_json::Value;

use super::index::{parse_binding, RoleKind};
use super::message::{go_quote, go_quote_list};
use super::rbac::{compact, covers, PolicyRule};
use super::{Authorizer, Decision};
use crate::auth::user::MASTERS;
use crate::auth::{Attributes, UserInfo};
use crate::registry::ResourceDef;
use crate::status::ApiError;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn forbidden(def: &ResourceDef, name: &str, err: &str) -> ApiError {
    let what = def.qualified();
    if name.is_empty() {
        ApiError::Forbidden(format!("{what} is forbidden: {err}"))
    } else {
        ApiError::Forbidden(format!("{what} {} is forbidden: {err}", go_quote(name)))
    }
}

fn verb_attrs(user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: RBAC_GROUP.into(),
        api_version: "*".into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// Upstream's `ConfirmNoEscalation`: the error text when `user` lacks some of `rules` in `ns`.
fn no_escalation(
    z: &Authorizer,
    user: &UserInfo,
    ns: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let (owner, errors) = z.cache.read().rules_for(user, ns);
    let (ok, missing) = covers(&owner, rules);
    if ok {
        return Ok(());
    }
    let mut lines: Vec<String> = compact(&missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    lines.sort();
    lines.dedup();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(&user.name),
        go_quote_list(&user.groups),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(msg)
}

/// Everything (upstream's `fullAuthority`), needed to set an aggregation rule.
fn full_authority() -> Vec<PolicyRule> {
    vec![
        PolicyRule::new(&["*"], &["*"], &["*"]),
        PolicyRule::urls(&["*"], &["*"]),
    ]
}

/// The escalation check of one write; retried once after the index caught up with the store,
/// so a grant made a moment ago counts.
pub async fn check(
    z: &Authorizer,
    user: &UserInfo,
    def: &ResourceDef,
    namespace: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    if def.group != RBAC_GROUP || user.in_group(MASTERS) {
        return Ok(());
    }
    match check_once(z, user, def, namespace, obj).await {
        Err(ApiError::Forbidden(_)) if z.cache.catch_up().await => {
            check_once(z, user, def, namespace, obj).await
        }
        r => r,
    }
}

fn allowed(z: &Authorizer, a: &Attributes) -> bool {
    matches!(z.decide(a), Decision::Allow(_))
}

async fn check_once(
    z: &Authorizer,
    user: &UserInfo,
    def: &ResourceDef,
    namespace: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let ns = if def.namespaced {
        namespace
            .or_else(|| obj["metadata"]["namespace"].as_str())
            .unwrap_or_default()
    } else {
        ""
    };
    match def.plural {
        "roles" | "clusterroles" => {
            if allowed(z, &verb_attrs(user, "escalate", def.plural, ns, name)) {
                return Ok(());
            }
            let rules: Vec<PolicyRule> =
                serde_json::from_value(obj["rules"].clone()).unwrap_or_default();
            no_escalation(z, user, ns, &rules).map_err(|e| forbidden(def, name, &e))?;
            let aggregates = obj["aggregationRule"]["clusterRoleSelectors"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if def.plural == "clusterroles"
                && aggregates
                && no_escalation(z, user, "", &full_authority()).is_err()
            {
                return Err(forbidden(
                    def,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let Some(b) = parse_binding(obj) else {
                return Ok(()); // validation reports the malformed binding
            };
            let resource = match b.role_kind {
                RoleKind::Role => "roles",
                RoleKind::ClusterRole => "clusterroles",
            };
            if allowed(z, &verb_attrs(user, "bind", resource, ns, &b.role_name)) {
                return Ok(());
            }
            let rules = {
                let idx = z.cache.read();
                match b.role_kind {
                    RoleKind::ClusterRole => idx.cluster_role(&b.role_name).map(|r| r.to_vec()),
                    RoleKind::Role => idx.role(ns, &b.role_name).map(|r| r.to_vec()),
                }
            };
            let Some(rules) = rules else {
                let singular = if resource == "roles" {
                    "role"
                } else {
                    "clusterrole"
                };
                let err = format!(
                    "{singular}.{RBAC_GROUP} {} not found",
                    go_quote(&b.role_name)
                );
                return Err(forbidden(def, name, &err));
            };
            no_escalation(z, user, ns, &rules).map_err(|e| forbidden(def, name, &e))
        }
        _ => Ok(()),
    }
}
