//! Registry configuration in the spirit of k3s `registries.yaml`: mirrors tried before a
//! registry, and per-host credentials and CA certificates.
//!
//! ```yaml
//! mirrors:
//!   docker.io:                      # or "*" for every registry
//!     endpoint: ["http://127.0.0.1:5000", "https://mirror.example:5443"]
//! configs:
//!   "mirror.example:5443":
//!     auth: {username: puller, password: secret}   # or auth: base64 of user:password
//!     tls: {ca_file: /etc/kennel/mirror-ca.pem}
//! ```
//!
//! - A mirror endpoint is a URL: `http://` means plain HTTP, `https://` (or no scheme) TLS; only
//!   a host and port (a path of `/` or `/v2` at most). Endpoints are tried in order, then the
//!   image's own registry, as containerd does. The image is recorded under its own name.
//! - Credentials of `configs` apply when the CRI request brings none for that host (a pod's
//!   `imagePullSecrets` win).
//! - Options kennel cannot honour (`insecure_skip_verify`, client certificates) are refused
//!   with a message naming them, never ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use images::auth::Credentials;
use serde::Deserialize;

/// Errors loading a registries file.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The file cannot be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse or has unknown fields.
    #[error("{path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, as the YAML parser says it.
        detail: String,
    },
    /// A value is wrong or unsupported.
    #[error("{path}: {field}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field (`mirrors."docker.io".endpoint[0]`).
        field: String,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorEntry>,
    #[serde(default)]
    configs: BTreeMap<String, ConfigEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorEntry {
    #[serde(default)]
    endpoint: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigEntry {
    auth: Option<AuthEntry>,
    tls: Option<TlsEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthEntry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsEntry {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// One mirror endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` (or `host`).
    pub host: String,
    /// Spoken to over plain HTTP.
    pub plain_http: bool,
}

/// The loaded configuration.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    mirrors: HashMap<String, Vec<Endpoint>>,
    /// Credentials per registry host.
    pub credentials: HashMap<String, Credentials>,
    /// CA certificates (PEM) to trust, from `tls.ca_file`.
    pub ca_pem: Vec<Vec<u8>>,
}

impl Registries {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistriesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` (the contents of `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, RegistriesError> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| RegistriesError::Parse {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?
        };
        let invalid = |field: String, detail: &str| RegistriesError::Invalid {
            path: path.to_path_buf(),
            field,
            detail: detail.to_string(),
        };
        let mut out = Self::default();
        for (registry, m) in file.mirrors {
            let mut eps = Vec::new();
            for (i, url) in m.endpoint.iter().enumerate() {
                let field = format!("mirrors.{registry:?}.endpoint[{i}]");
                eps.push(parse_endpoint(url).map_err(|d| invalid(field, &d))?);
            }
            out.mirrors.insert(registry, eps);
        }
        for (host, c) in file.configs {
            if let Some(a) = c.auth {
                let field = format!("configs.{host:?}.auth");
                if a.identitytoken.is_some() {
                    return Err(invalid(
                        field,
                        "identitytoken is not supported (use username and password)",
                    ));
                }
                let creds = match (a.username, a.password, a.auth) {
                    (Some(username), Some(password), None) => Credentials { username, password },
                    (None, None, Some(b64)) => decode_auth(&b64).map_err(|d| invalid(field, &d))?,
                    _ => {
                        return Err(invalid(
                            field,
                            "give username and password, or auth (base64 of user:password)",
                        ))
                    }
                };
                out.credentials.insert(host.clone(), creds);
            }
            if let Some(t) = c.tls {
                let field = format!("configs.{host:?}.tls");
                if t.insecure_skip_verify {
                    return Err(invalid(
                        field,
                        "insecure_skip_verify is not supported: trust the registry's CA with ca_file",
                    ));
                }
                if t.cert_file.is_some() || t.key_file.is_some() {
                    return Err(invalid(
                        field,
                        "client certificates (cert_file, key_file) are not supported",
                    ));
                }
                if let Some(ca) = t.ca_file {
                    let pem = std::fs::read(&ca).map_err(|e| {
                        invalid(
                            format!("{field}.ca_file"),
                            &format!("{}: {e}", ca.display()),
                        )
                    })?;
                    out.ca_pem.push(pem);
                }
            }
        }
        Ok(out)
    }

    /// Where to fetch an image of `registry` from, in order: each mirror host (`Some`), then
    /// the registry itself (`None`). A `*` entry applies to registries without their own.
    pub fn sources(&self, registry: &str) -> Vec<Option<String>> {
        let eps = self
            .mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        eps.iter()
            .filter(|e| e.host != registry)
            .map(|e| Some(e.host.clone()))
            .chain(std::iter::once(None))
            .collect()
    }

    /// Mirror hosts spoken to over plain HTTP.
    pub fn plain_http(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .mirrors
            .values()
            .flatten()
            .filter(|e| e.plain_http)
            .map(|e| e.host.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (plain_http, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if url.contains("://") {
        return Err(format!("{url:?}: only http:// and https:// endpoints"));
    } else {
        (false, url)
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if !matches!(path.trim_end_matches('/'), "" | "v2") {
        return Err(format!(
            "{url:?}: a path ({path:?}) is not supported, give host[:port]"
        ));
    }
    Ok(Endpoint {
        host: host.to_string(),
        plain_http,
    })
}

fn decode_auth(b64: &str) -> Result<Credentials, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("auth is not base64: {e}"))?;
    let raw = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
    let (u, p) = raw
        .split_once(':')
        .ok_or_else(|| "auth is not base64 of user:password".to_string())?;
    Ok(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registries, RegistriesError> {
        Registries::parse(Path::new("registries.yaml"), text)
    }

    #[test]
    fn mirrors_then_the_registry_itself() {
        let r = parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\", \"https://m.example:5443/v2\", \"docker.io\"]\n  \"*\":\n    endpoint: [\"mirror.local\"]\n",
        )
        .unwrap();
        assert_eq!(
            r.sources("docker.io"),
            vec![
                Some("127.0.0.1:5000".to_string()),
                Some("m.example:5443".to_string()),
                None
            ]
        );
        assert_eq!(
            r.sources("quay.io"),
            vec![Some("mirror.local".to_string()), None]
        );
        assert_eq!(r.plain_http(), vec!["127.0.0.1:5000".to_string()]);
        assert_eq!(parse("").unwrap().sources("x"), vec![None]);
    }

    #[test]
    fn credentials_in_both_forms() {
        let r = parse(
            "configs:\n  a:5000:\n    auth: {username: u, password: p}\n  b:\n    auth: {auth: dTI6cDI=}\n",
        )
        .unwrap();
        assert_eq!(r.credentials["a:5000"].username, "u");
        assert_eq!(r.credentials["a:5000"].password, "p");
        assert_eq!(r.credentials["b"].username, "u2");
        assert_eq!(r.credentials["b"].password, "p2");
    }

    #[test]
    fn bad_input_is_named() {
        let cases = [
            ("mirrors:\n  x:\n    endpoints: [a]\n", "endpoints"),
            (
                "mirrors:\n  x:\n    endpoint: [\"ftp://a\"]\n",
                "endpoint[0]",
            ),
            (
                "mirrors:\n  x:\n    endpoint: [\"http://a/some/path\"]\n",
                "path",
            ),
            ("configs:\n  a:\n    auth: {username: u}\n", "auth"),
            ("configs:\n  a:\n    auth: {auth: \"!!\"}\n", "base64"),
            (
                "configs:\n  a:\n    tls: {insecure_skip_verify: true}\n",
                "insecure_skip_verify",
            ),
            (
                "configs:\n  a:\n    tls: {cert_file: /c, key_file: /k}\n",
                "client certificates",
            ),
            (
                "configs:\n  a:\n    tls: {ca_file: /nonexistent/ca.pem}\n",
                "ca_file",
            ),
            ("mirrors: [1, 2]\n", "registries.yaml"),
        ];
        for (text, needle) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("registries.yaml"), "{e}");
        }
    }
}
