//! Client certificates: the TLS layer verified the chain against the cluster CA; the identity is
//! the subject's CommonName (user) and Organizations (groups), as upstream.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::AuthnError;
use crate::auth::UserInfo;

/// The user a (verified) client certificate names: CN → user, every O → a group, plus
/// `system:authenticated`. A certificate without a CN is refused.
pub fn user_from_cert(der: &[u8]) -> Result<UserInfo, AuthnError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| AuthnError::Invalid(format!("client certificate: {e}")))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .find(|s| !s.is_empty())
        .ok_or_else(|| AuthnError::Invalid("client certificate has no common name".into()))?;
    let mut user = UserInfo {
        name: name.to_string(),
        groups: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        ..Default::default()
    };
    user.ensure_authenticated();
    Ok(user)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::user::{AUTHENTICATED, MASTERS, NODES};
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// A self-signed certificate with this CN (if any) and these Os (at most two: rcgen keeps one
    /// value per attribute type, so the second is written under the O OID as a custom type).
    pub(crate) fn cert(cn: Option<&str>, orgs: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        for (i, o) in orgs.iter().enumerate() {
            let ty = match i {
                0 => DnType::OrganizationName,
                _ => DnType::CustomDnType(vec![2, 5, 4, 10]),
            };
            p.distinguished_name
                .push(ty, rcgen::DnValue::Utf8String(o.to_string()));
        }
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn cn_and_orgs() {
        let u = user_from_cert(&cert(Some("system:node:n1"), &[NODES, "extra"])).unwrap();
        assert_eq!(u.name, "system:node:n1");
        assert_eq!(u.groups, vec![NODES, "extra", AUTHENTICATED]);
        assert_eq!(u.node_name(), Some("n1"));
        let a = user_from_cert(&cert(Some("kubernetes-admin"), &[MASTERS])).unwrap();
        assert!(a.in_group(MASTERS));
        assert!(user_from_cert(&cert(None, &[MASTERS])).is_err());
        assert!(user_from_cert(b"not a certificate").is_err());
    }
}
