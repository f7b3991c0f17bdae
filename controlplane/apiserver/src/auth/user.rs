//! The identity a request carries after authentication (upstream's `user.Info`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The anonymous user.
pub const ANONYMOUS: &str = "system:anonymous";
/// Members may do anything (never subject to RBAC).
pub const MASTERS: &str = "system:masters";
/// Group of node agents (`system:node:<name>`).
pub const NODES: &str = "system:nodes";
/// User-name prefix of node agents.
pub const NODE_PREFIX: &str = "system:node:";
/// User-name prefix of ServiceAccounts (`system:serviceaccount:<ns>:<name>`).
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Group of all ServiceAccounts (and `system:serviceaccounts:<ns>` per namespace).
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// An authenticated identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name (`admin`, `system:node:n1`, `system:serviceaccount:default:default`).
    #[serde(rename = "username")]
    pub name: String,
    /// Stable id, when the authenticator knows one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups, including `system:authenticated` for every authenticated user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes (e.g. `authentication.kubernetes.io/pod-name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with these groups (plus `system:authenticated`).
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        let mut u = UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        u.ensure_authenticated();
        u
    }

    /// The anonymous user (`system:anonymous` in `system:unauthenticated`).
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// Adds `system:authenticated` unless present (or the user is anonymous).
    pub fn ensure_authenticated(&mut self) {
        if self.name != ANONYMOUS && !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name of a node agent's identity (`system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(NODES) {
            return None;
        }
        self.name
            .strip_prefix(NODE_PREFIX)
            .filter(|n| !n.is_empty())
    }

    /// Namespace and name of a ServiceAccount identity.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.name.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
        let (ns, name) = rest.split_once(':')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        let n = UserInfo::new("system:node:n1", &[NODES]);
        assert_eq!(n.node_name(), Some("n1"));
        assert!(n.in_group(AUTHENTICATED));
        assert_eq!(UserInfo::new("system:node:n1", &[]).node_name(), None);
        let sa = UserInfo::new("system:serviceaccount:default:builder", &[]);
        assert_eq!(sa.service_account(), Some(("default", "builder")));
        assert_eq!(
            UserInfo::new("system:serviceaccount:x", &[]).service_account(),
            None
        );
        assert!(!UserInfo::anonymous().in_group(AUTHENTICATED));
    }
}
