//! Image references (`[registry/]repository[:tag][@digest]`) normalised like Docker and CRI do.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Default registry for names without a host.
pub const DOCKER_HUB: &str = "docker.io";

/// Errors parsing a reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// Empty string.
    #[error("empty image reference")]
    Empty,
    /// Repository path with invalid characters.
    #[error("invalid repository name {0:?} (lowercase letters, digits, '.', '_', '-', '/')")]
    Repository(String),
    /// Tag with invalid characters or too long.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// Digest that does not parse.
    #[error("invalid digest in reference: {0}")]
    Digest(#[from] crate::digest::DigestError),
}

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag, if any (a reference without tag or digest gets `latest`).
    pub tag: Option<String>,
    /// Digest, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// `registry/repository` (the image name without tag or digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `name:tag`, when tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` for a given digest.
    pub fn with_digest(&self, d: &Digest) -> String {
        format!("{}@{d}", self.name())
    }

    /// The manifest reference to request: digest if present, else tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let valid = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !valid {
                return Err(ReferenceError::Tag(t.clone()));
            }
        }
        let (registry, repo) = match name.split_once('/') {
            Some((host, repo)) if host.contains(['.', ':']) || host == "localhost" => {
                (host.to_string(), repo.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        let valid_repo = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
                    && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            });
        if !valid_repo {
            return Err(ReferenceError::Repository(repository));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub_names() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r: Reference = "luksa/kubia:v2".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/luksa/kubia:v2");
    }

    #[test]
    fn parses_registry_port_tag_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("127.0.0.1:5000/kubia:1.0@{d}").parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "kubia");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.manifest_ref(), d);
        let r: Reference = "localhost:5000/a/b".parse().unwrap();
        assert_eq!(r.tagged().unwrap(), "localhost:5000/a/b:latest");
        let r: Reference = format!("localhost/x@{d}").parse().unwrap();
        assert_eq!(r.tag, None);
    }

    #[test]
    fn rejects_bad_references() {
        assert!(matches!(
            "".parse::<Reference>(),
            Err(ReferenceError::Empty)
        ));
        assert!(matches!(
            "Busybox".parse::<Reference>(),
            Err(ReferenceError::Repository(_))
        ));
        assert!(matches!(
            "busybox:".parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            "busybox@sha256:zz".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
        assert!("reg.io/../x".parse::<Reference>().is_err());
    }
}
