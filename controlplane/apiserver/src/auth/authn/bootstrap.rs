//! Bootstrap tokens (`<id>.<secret>`, upstream's `--enable-bootstrap-token-auth`), validated
//! against the Secret `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::{lookup, AuthnError};
use crate::auth::UserInfo;
use kennel_store::Store;

/// Namespace of bootstrap-token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// Secret name prefix (`bootstrap-token-<id>`).
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Secret type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Group of every bootstrap token user.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// User-name prefix (`system:bootstrap:<id>`).
pub const USER_PREFIX: &str = "system:bootstrap:";

/// The token id and secret of a token of the bootstrap shape (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Authenticates a bootstrap-shaped token against its Secret.
pub async fn authenticate(
    store: &dyn Store,
    id: &str,
    secret: &str,
    now: i64,
) -> Result<UserInfo, AuthnError> {
    let inv = |s: &str| AuthnError::Invalid(format!("bootstrap token {id}: {s}"));
    let name = format!("{SECRET_PREFIX}{id}");
    let obj = lookup::get(store, "secrets", Some(NAMESPACE), &name)
        .await
        .map_err(|e| AuthnError::Invalid(format!("bootstrap token lookup: {e}")))?
        .ok_or_else(|| inv("no such token"))?;
    if obj["type"].as_str() != Some(SECRET_TYPE) {
        return Err(inv(
            "the Secret is not of type bootstrap.kubernetes.io/token",
        ));
    }
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return Err(inv("the Secret is being deleted"));
    }
    let field = |k: &str| data(&obj, k);
    let stored = field("token-secret").unwrap_or_default();
    if !constant_time_eq(stored.as_bytes(), secret.as_bytes()) {
        return Err(inv("wrong token secret"));
    }
    if field("token-id").is_some_and(|t| t != id) {
        return Err(inv("the Secret's token-id does not match"));
    }
    if let Some(exp) = field("expiration") {
        let t = chrono::DateTime::parse_from_rfc3339(&exp).map_err(|_| inv("bad expiration"))?;
        if t.timestamp() <= now {
            return Err(inv("expired"));
        }
    }
    if field("usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(inv("not usable for authentication"));
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    if let Some(extra) = field("auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_extra_group(g) {
                return Err(inv(&format!("invalid extra group {g:?}")));
            }
            if !groups.iter().any(|x| x == g) {
                groups.push(g.to_string());
            }
        }
    }
    let mut user = UserInfo {
        name: format!("{USER_PREFIX}{id}"),
        groups,
        ..Default::default()
    };
    user.ensure_authenticated();
    Ok(user)
}

/// A Secret's `data` (base64) or `stringData` value.
fn data(obj: &Value, key: &str) -> Option<String> {
    if let Some(b64) = obj["data"][key].as_str() {
        return STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
    }
    obj["stringData"][key].as_str().map(str::to_string)
}

/// Upstream's `^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$`.
fn valid_extra_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !rest.is_empty()
        && rest.len() <= 256
        && rest.bytes().all(|b| ok(b) || b == b':' || b == b'-')
        && rest.bytes().last().is_some_and(ok)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::user::AUTHENTICATED;
    use serde_json::json;
    use std::sync::Arc;

    pub(crate) async fn put_secret(store: &dyn Store, id: &str, data: &[(&str, &str)], ty: &str) {
        let def = crate::registry::find("", "v1", "secrets").unwrap();
        let name = format!("{SECRET_PREFIX}{id}");
        let d: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(STANDARD.encode(v))))
            .collect();
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": "s-uid"}, "data": d});
        let key = def.key(Some(NAMESPACE), &name);
        let _ = store.delete(&key, None).await;
        store
            .create(&key, crate::handlers::encode(&obj))
            .await
            .unwrap();
    }

    #[test]
    fn shape() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert!(parse("ABCDEF.0123456789abcdef").is_none());
        assert!(parse("abcdef.0123456789abcde").is_none());
        assert!(parse("abcdef0123456789abcdef").is_none());
        assert!(valid_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!valid_extra_group("system:masters"));
        assert!(!valid_extra_group("system:bootstrappers:x-"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[tokio::test]
    async fn validates_against_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(kennel_store::SqliteStore::open(dir.path()).unwrap());
        let now = chrono::Utc::now().timestamp();
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let (id, sec) = ("abcdef", "0123456789abcdef");
        let base = [
            ("token-id", id),
            ("token-secret", sec),
            ("usage-bootstrap-authentication", "true"),
            (
                "auth-extra-groups",
                "system:bootstrappers:kubeadm:default-node-token",
            ),
        ];
        put_secret(
            store.as_ref(),
            id,
            &[&base[..], &[("expiration", &future)]].concat(),
            SECRET_TYPE,
        )
        .await;
        let u = authenticate(store.as_ref(), id, sec, now).await.unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            vec![
                BOOTSTRAPPERS,
                "system:bootstrappers:kubeadm:default-node-token",
                AUTHENTICATED
            ]
        );
        // Wrong secret, unknown id.
        assert!(authenticate(store.as_ref(), id, "0123456789abcdee", now)
            .await
            .is_err());
        assert!(authenticate(store.as_ref(), "zzzzzz", sec, now)
            .await
            .is_err());
        // Expired.
        put_secret(
            store.as_ref(),
            id,
            &[&base[..], &[("expiration", &past)]].concat(),
            SECRET_TYPE,
        )
        .await;
        let e = authenticate(store.as_ref(), id, sec, now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // Not for authentication.
        put_secret(store.as_ref(), id, &base[..2], SECRET_TYPE).await;
        let e = authenticate(store.as_ref(), id, sec, now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not usable"), "{e}");
        // Wrong type, bad extra group.
        put_secret(store.as_ref(), id, &base, "Opaque").await;
        assert!(authenticate(store.as_ref(), id, sec, now).await.is_err());
        put_secret(
            store.as_ref(),
            id,
            &[&base[..3], &[("auth-extra-groups", "system:masters")]].concat(),
            SECRET_TYPE,
        )
        .await;
        assert!(authenticate(store.as_ref(), id, sec, now).await.is_err());
    }
}
