//! Client certificates signed by the cluster CA (user = CN, groups = O) and the kubeconfigs that
//! carry them: the admin (`system:masters`) and each component of `kennel up` gets its own identity.

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};

use super::{ca_params, write_atomic, PkiError};

/// An identity to issue a client certificate for.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// File stem in the pki directory (`<stem>.crt`, `<stem>.key`, `<stem>.kubeconfig`).
    pub stem: &'a str,
    /// User name (certificate CN).
    pub user: &'a str,
    /// Group (the certificate's O; rcgen writes one value per attribute type, so one group).
    pub group: Option<&'a str>,
}

/// The admin identity (in `system:masters`).
pub const ADMIN: ClientIdentity<'static> = ClientIdentity {
    stem: "admin",
    user: "kubernetes-admin",
    group: Some("system:masters"),
};

fn load_ca(pki_dir: &Path) -> Result<KeyPair, PkiError> {
    let ca_key_path = pki_dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|source| PkiError::Io {
        path: ca_key_path.clone(),
        source,
    })?;
    KeyPair::from_pem(&ca_key_pem).map_err(|_| PkiError::Pem(ca_key_path))
}

/// Issues a client certificate for `id`, signed by the CA in `pki_dir`; returns
/// `(cert_pem, key_pem)` without writing anything.
pub fn issue_client_cert(
    pki_dir: &Path,
    id: &ClientIdentity,
) -> Result<(String, String), PkiError> {
    let ca_key = load_ca(pki_dir)?;
    let ca_params = ca_params()?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, id.user);
    if let Some(g) = id.group {
        params.distinguished_name.push(DnType::OrganizationName, g);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The client certificate and key of `id`, issued once and kept in `pki_dir` (re-issued when
/// either file is missing).
pub fn ensure_client_cert(
    pki_dir: &Path,
    id: &ClientIdentity,
) -> Result<(String, String), PkiError> {
    let (crt, key) = (
        pki_dir.join(format!("{}.crt", id.stem)),
        pki_dir.join(format!("{}.key", id.stem)),
    );
    if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
        if !c.trim().is_empty() && !k.trim().is_empty() {
            return Ok((c, k));
        }
    }
    let (c, k) = issue_client_cert(pki_dir, id)?;
    write_atomic(&key, k.as_bytes())?;
    write_atomic(&crt, c.as_bytes())?;
    Ok((c, k))
}

/// A kubeconfig (YAML) for `server` authenticating with a client certificate.
pub fn cert_kubeconfig(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca_line = if ca_pem.is_empty() {
        String::new()
    } else {
        format!("    certificate-authority-data: {}\n", b64.encode(ca_pem))
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kennel
  cluster:
    server: {server}
{ca_line}users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: kennel
  context:
    cluster: kennel
    user: {user}
    namespace: default
current-context: kennel
",
        user = serde_json::to_string(user).unwrap_or_default(),
        cert = b64.encode(cert_pem),
        key = b64.encode(key_pem),
    )
}

/// Writes `<pki_dir>/<stem>.kubeconfig` for `id` against `server` and returns its path.
pub fn write_client_kubeconfig(
    pki_dir: &Path,
    id: &ClientIdentity,
    server: &str,
    ca_pem: &str,
) -> Result<PathBuf, PkiError> {
    let (cert, key) = ensure_client_cert(pki_dir, id)?;
    let path = pki_dir.join(format!("{}.kubeconfig", id.stem));
    write_atomic(
        &path,
        cert_kubeconfig(server, ca_pem, id.user, &cert, &key).as_bytes(),
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_carries_user_and_groups_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::ensure_pki(dir.path(), &[]).unwrap();
        let pdir = super::super::pki_dir(dir.path());
        let id = ClientIdentity {
            stem: "node-n1",
            user: "system:node:n1",
            group: Some("system:nodes"),
        };
        let (c1, _) = ensure_client_cert(&pdir, &id).unwrap();
        let (c2, _) = ensure_client_cert(&pdir, &id).unwrap();
        assert_eq!(c1, c2);
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(c1.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let o: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:n1"]);
        assert_eq!(o, ["system:nodes"]);
        let kc = cert_kubeconfig("https://127.0.0.1:1", &pki.ca_pem, id.user, &c1, "k");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&kc).unwrap();
        assert_eq!(parsed["users"][0]["name"], "system:node:n1");
    }
}
