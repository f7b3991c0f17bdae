//! Cluster PKI and credentials: a generated CA, the API server's serving certificate, the admin
//! bearer token and the admin kubeconfig, all kept in the data directory (written atomically).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors while creating or loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM file could not be parsed.
    #[error("{0}: invalid PEM")]
    Pem(PathBuf),
    /// rustls rejected the configuration.
    #[error("tls config: {0}")]
    Tls(#[from] rustls::Error),
}

/// Paths and contents of the cluster's credentials.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// Serving certificate (PEM).
    pub cert_pem: String,
    /// Serving key (PEM).
    pub key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
}

/// Writes `data` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(data).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Loads the credentials from `dir/pki`, generating whatever is missing. `sans` are extra
/// subject alternative names for the serving certificate.
pub fn ensure_pki(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
    let pki = dir.join("pki");
    let (ca_crt, ca_key, crt, key, token) = (
        pki.join("ca.crt"),
        pki.join("ca.key"),
        pki.join("apiserver.crt"),
        pki.join("apiserver.key"),
        pki.join("admin.token"),
    );
    let existing = (read(&ca_crt), read(&crt), read(&key));
    let (ca_pem, cert_pem, key_pem) = match existing {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => {
            let ca_keypair = KeyPair::generate()?;
            let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "kennel-ca");
            ca_params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let ca_cert = ca_params.self_signed(&ca_keypair)?;
            let mut names: Vec<String> = [
                "localhost",
                "127.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            names.extend(sans.iter().cloned());
            let mut params = CertificateParams::new(names)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "kube-apiserver");
            let server_key = KeyPair::generate()?;
            let issuer = Issuer::from_params(&ca_params, &ca_keypair);
            let cert = params.signed_by(&server_key, &issuer)?;
            let out = (ca_cert.pem(), cert.pem(), server_key.serialize_pem());
            write_atomic(&ca_key, ca_keypair.serialize_pem().as_bytes())?;
            write_atomic(&ca_crt, out.0.as_bytes())?;
            write_atomic(&key, out.2.as_bytes())?;
            write_atomic(&crt, out.1.as_bytes())?;
            out
        }
    };
    let admin_token = match read(&token) {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            write_atomic(&token, t.as_bytes())?;
            t
        }
    };
    Ok(Pki {
        ca_pem,
        cert_pem,
        key_pem,
        admin_token,
    })
}

impl Pki {
    /// A rustls server configuration (HTTP/2 and HTTP/1.1) for the serving certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| PkiError::Pem("apiserver.crt".into()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|_| PkiError::Pem("apiserver.key".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// An admin kubeconfig for `server` (e.g. `https://127.0.0.1:6443`).
    pub fn kubeconfig(&self, server: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kennel
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: kennel
  context:
    cluster: kennel
    user: admin
    namespace: default
current-context: kennel
",
            token = self.admin_token
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_pki(dir.path(), &["example.test".into()]).unwrap();
        let b = ensure_pki(dir.path(), &[]).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.admin_token.len(), 64);
        a.server_config().unwrap();
        assert!(a
            .kubeconfig("https://127.0.0.1:1")
            .contains("certificate-authority-data"));
    }
}
