//! Cluster PKI and credentials: a generated CA, the API server's serving certificate, the admin
//! bearer token, the kubelet-client token (the API server's credential towards node agents), node
//! serving certificates signed by the CA and the admin kubeconfig, all kept in the data directory's
//! `pki/` (written atomically).

pub mod client;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
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
    /// A credential file is empty.
    #[error("{0}: empty")]
    Empty(PathBuf),
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
    /// The bearer token the API server presents to node agents (`pki/kubelet-client.token`).
    pub kubelet_client_token: String,
}

/// File name (in the pki directory) of the token the API server presents to node agents.
pub const KUBELET_CLIENT_TOKEN: &str = "kubelet-client.token";

/// The pki directory of a data directory (`<data_dir>/pki`).
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
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

/// A fresh random bearer token (256 bits, hex).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Reads the token at `path`, creating it (atomically) when it is missing or empty.
fn ensure_token(path: &Path) -> Result<String, PkiError> {
    match read(path) {
        Some(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let t = random_token();
            write_atomic(path, t.as_bytes())?;
            Ok(t)
        }
    }
}

/// The CA's certificate parameters. The CA certificate is re-created from these when signing later
/// (the issuer name must match the stored CA's subject byte for byte, so keep them stable).
pub(crate) fn ca_params() -> Result<CertificateParams, PkiError> {
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
    Ok(ca_params)
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
            let ca_params = ca_params()?;
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
    let admin_token = ensure_token(&token)?;
    let kubelet_client_token = ensure_token(&pki.join(KUBELET_CLIENT_TOKEN))?;
    Ok(Pki {
        ca_pem,
        cert_pem,
        key_pem,
        admin_token,
        kubelet_client_token,
    })
}

/// Reads the kubelet-client token from `pki_dir` (created by [`ensure_pki`]); node agents accept
/// requests to their API that carry it.
pub fn read_kubelet_client_token(pki_dir: &Path) -> Result<String, PkiError> {
    let path = pki_dir.join(KUBELET_CLIENT_TOKEN);
    let text = std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(PkiError::Empty(path));
    }
    Ok(token.to_string())
}

/// Issues a serving certificate for node `node_name`'s API (port 10250), signed by the cluster CA in
/// `pki_dir` (created by [`ensure_pki`]). Subject alternative names: the node name, `ips`,
/// `127.0.0.1` and `localhost`. Returns `(cert_pem, key_pem)`; nothing is written.
pub fn issue_node_cert(
    pki_dir: &Path,
    node_name: &str,
    ips: &[IpAddr],
) -> Result<(String, String), PkiError> {
    let ca_key_path = pki_dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|source| PkiError::Io {
        path: ca_key_path.clone(),
        source,
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|_| PkiError::Pem(ca_key_path))?;
    let ca_params = ca_params()?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let mut names: Vec<String> = vec![node_name.to_string()];
    let loopback = [IpAddr::from([127, 0, 0, 1])];
    for ip in ips.iter().chain(loopback.iter()) {
        let ip = ip.to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    if !names.iter().any(|n| n == "localhost") {
        names.push("localhost".into());
    }
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, node_name.to_string());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// A rustls server configuration (HTTP/2 and HTTP/1.1) for the serving certificate. Client
    /// certificates signed by the cluster CA are verified when presented (and optional).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| PkiError::Pem("apiserver.crt".into()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|_| PkiError::Pem("apiserver.key".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let c = c.map_err(|_| PkiError::Pem("ca.crt".into()))?;
            roots.add(c)?;
        }
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
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
        assert_eq!(a.kubelet_client_token, b.kubelet_client_token);
        assert_eq!(a.kubelet_client_token.len(), 64);
        assert_ne!(a.kubelet_client_token, a.admin_token);
        assert_eq!(
            read_kubelet_client_token(&pki_dir(dir.path())).unwrap(),
            a.kubelet_client_token
        );
    }

    #[test]
    fn kubelet_client_token_added_to_existing_pki() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_pki(dir.path(), &[]).unwrap();
        std::fs::remove_file(pki_dir(dir.path()).join(KUBELET_CLIENT_TOKEN)).unwrap();
        assert!(read_kubelet_client_token(&pki_dir(dir.path())).is_err());
        let b = ensure_pki(dir.path(), &[]).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert_ne!(a.kubelet_client_token, b.kubelet_client_token);
        assert_eq!(b.kubelet_client_token.len(), 64);
    }

    fn verify(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn node_cert_chains_to_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_pki(dir.path(), &[]).unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let (cert, key) = issue_node_cert(&pki_dir(dir.path()), "node-1", &[ip]).unwrap();
        for name in ["node-1", "10.1.2.3", "127.0.0.1", "localhost"] {
            verify(&pki.ca_pem, &cert, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(verify(&pki.ca_pem, &cert, "node-2").is_err());
        assert!(verify(&pki.ca_pem, &cert, "10.1.2.4").is_err());
        // a different cluster's CA does not accept it
        let other = tempfile::tempdir().unwrap();
        let other = ensure_pki(other.path(), &[]).unwrap();
        assert!(verify(&other.ca_pem, &cert, "node-1").is_err());
        // the pair serves TLS
        Pki {
            cert_pem: cert,
            key_pem: key,
            ..pki
        }
        .server_config()
        .unwrap();
        // a missing CA is an error naming the file
        let empty = tempfile::tempdir().unwrap();
        let err = issue_node_cert(empty.path(), "n", &[]).unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
    }
}
