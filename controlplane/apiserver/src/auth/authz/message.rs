//! Upstream's texts: the 403 message of a denied request (`forbiddenMessage` in
//! `apiserver/pkg/endpoints/handlers/responsewriters/errors.go`) and Go's `%q` quoting.

use crate::auth::Attributes;

/// Go's `%q` of a string (`"a\"b"`): printable characters kept, the rest escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string` (`["a" "b"]`).
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Upstream's 403 message: `User "jane" cannot list resource "pods" in API group "" in the
/// namespace "default"` (`at the cluster scope` without a namespace; `cannot get path "/x"` for a
/// non-resource request), with `: <reason>` appended when the reason is not empty.
pub fn forbidden_message(a: &Attributes, reason: &str) -> String {
    let user = go_quote(&a.user.name);
    let msg = if !a.resource_request {
        format!("User {user} cannot {} path {}", a.verb, go_quote(&a.path))
    } else {
        let resource = go_quote(&a.full_resource());
        let group = go_quote(&a.api_group);
        if a.namespace.is_empty() {
            format!(
                "User {user} cannot {} resource {resource} in API group {group} at the cluster scope",
                a.verb
            )
        } else {
            format!(
                "User {user} cannot {} resource {resource} in API group {group} in the namespace {}",
                a.verb,
                go_quote(&a.namespace)
            )
        }
    };
    if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn attrs(verb: &str, ns: &str, group: &str, res: &str, sub: &str) -> Attributes {
        Attributes {
            user: UserInfo::new("jane", &[]),
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn message_forms() {
        assert_eq!(
            forbidden_message(&attrs("list", "default", "", "pods", ""), ""),
            r#"User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        assert_eq!(
            forbidden_message(&attrs("list", "", "", "nodes", ""), ""),
            r#"User "jane" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        assert_eq!(
            forbidden_message(&attrs("create", "a", "", "pods", "exec"), ""),
            r#"User "jane" cannot create resource "pods/exec" in API group "" in the namespace "a""#
        );
        assert_eq!(
            forbidden_message(&attrs("get", "a", "apps", "deployments", ""), "no way"),
            r#"User "jane" cannot get resource "deployments" in API group "apps" in the namespace "a": no way"#
        );
        let a = Attributes {
            user: UserInfo::new("x", &[]),
            verb: "get".into(),
            path: "/healthz".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&a, ""),
            r#"User "x" cannot get path "/healthz""#
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            go_quote_list(&["a".to_string(), "".to_string()]),
            r#"["a" ""]"#
        );
    }
}
