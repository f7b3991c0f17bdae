//! Image pulls by `imagePullPolicy`, with credentials from the pod's `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` secrets).

use base64::Engine;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Secret};

/// Why an image could not be made present.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// `imagePullPolicy: Never` and the image is absent.
    #[error("Container image \"{0}\" is not present with pull policy of Never")]
    NeverPull(String),
    /// The registry or runtime refused.
    #[error("Failed to pull image \"{image}\": {message}")]
    Failed {
        /// The image.
        image: String,
        /// The runtime's message.
        message: String,
    },
}

/// The registry host of an image reference (Docker's rules: the first path part is a host when
/// it has a `.` or `:` or is `localhost`; otherwise Docker Hub).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// The effective pull policy: explicit, else `Always` for `:latest` or no tag, else `IfNotPresent`.
pub fn pull_policy(c: &Container) -> String {
    if let Some(p) = &c.image_pull_policy {
        return p.clone();
    }
    let image = c.image.as_deref().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent".into();
    }
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always".into(),
        Some(_) => "IfNotPresent".into(),
    }
}

fn matches_registry(key: &str, registry: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    host == registry
        || (registry == "docker.io"
            && matches!(
                host,
                "index.docker.io" | "registry-1.docker.io" | "docker.io"
            ))
}

/// Credentials for `image` from the pull secrets, in order (the first matching entry wins).
pub fn auth_for(image: &str, secrets: &[Secret]) -> Option<cri::AuthConfig> {
    let registry = registry_of(image);
    for s in secrets {
        let data = s.data.clone().unwrap_or_default();
        let Some(json) = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"))
        else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json.0) else {
            continue;
        };
        let auths = v.get("auths").unwrap_or(&v);
        let Some(map) = auths.as_object() else {
            continue;
        };
        for (key, entry) in map {
            if !matches_registry(key, &registry) {
                continue;
            }
            let mut username = entry["username"].as_str().unwrap_or_default().to_string();
            let mut password = entry["password"].as_str().unwrap_or_default().to_string();
            if let Some(auth) = entry["auth"].as_str() {
                if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth) {
                    if let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':') {
                        username = u.to_string();
                        password = p.to_string();
                    }
                }
            }
            return Some(cri::AuthConfig {
                username,
                password,
                server_address: registry.clone(),
                ..Default::default()
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn registry_host_rules() {
        for (image, host) in [
            ("busybox", "docker.io"),
            ("library/busybox:1", "docker.io"),
            ("luksa/kubia", "docker.io"),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000"),
            ("localhost/x", "localhost"),
            ("quay.io/a/b@sha256:00", "quay.io"),
        ] {
            assert_eq!(registry_of(image), host, "{image}");
        }
    }

    #[test]
    fn default_pull_policy() {
        for (image, policy) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("127.0.0.1:5000/busybox", "Always"),
            ("127.0.0.1:5000/busybox:v1", "IfNotPresent"),
            ("busybox@sha256:abc", "IfNotPresent"),
        ] {
            let c = Container {
                image: Some(image.into()),
                ..Default::default()
            };
            assert_eq!(pull_policy(&c), policy, "{image}");
        }
    }

    #[test]
    fn credentials_from_dockerconfigjson() {
        let cfg = r#"{"auths":{"https://127.0.0.1:5000":{"auth":"dTpw"}},"other":1}"#;
        let s = Secret {
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(cfg.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        let a = auth_for("127.0.0.1:5000/busybox", std::slice::from_ref(&s)).expect("matched");
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        assert!(auth_for("busybox", &[s]).is_none());
    }
}
