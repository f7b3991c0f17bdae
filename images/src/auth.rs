//! Registry authentication: `WWW-Authenticate` challenges (Basic and Bearer) and credentials.

use std::collections::BTreeMap;

use base64::Engine as _;

/// A user name and password (or identity token as password) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization: Basic …` header value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic auth.
    Basic,
    /// Token auth: get a token from `realm`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter for the token endpoint.
        service: Option<String>,
        /// `scope` the server asked for, if any.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value; `None` for unknown schemes.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// Parses `key="value", key2=value2` (commas inside quotes allowed).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// Body of a token endpoint response.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    /// Docker's field.
    #[serde(default)]
    pub token: Option<String>,
    /// OAuth2's field.
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    /// The token, whichever field carried it.
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token)
            .filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
    }

    #[test]
    fn parses_basic_and_unknown() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn basic_header_and_tokens() {
        let c = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(c.basic_header(), "Basic dTpw");
        assert!(!format!("{c:?}").contains('p'.to_string().repeat(2).as_str()));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("x"));
    }
}
