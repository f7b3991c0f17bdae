//! TLS: certificates from `spec.tls[].secretName` (Secrets of type `kubernetes.io/tls`, PEM
//! `tls.crt`/`tls.key`, the Ingress's namespace) for `spec.tls[].hosts`, chosen by SNI (exact
//! host, then `*.` wildcard) in a rustls [`ResolvesServerCert`]; any other name gets a
//! self-signed default certificate generated at start.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::paths::{request_host, wildcard_suffix, HostMatch};
use crate::table::{full_name, sort_oldest_first};

/// The Secret type Ingress TLS certificates come in.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Subject CN of the default certificate.
pub const DEFAULT_CERT_CN: &str = "Kennel Ingress Default Certificate";

/// A certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the default certificate failed.
    #[error("generate the default certificate")]
    Generate(#[from] rcgen::Error),
    /// The Secret is not of type `kubernetes.io/tls`.
    #[error("secret {0} is not of type kubernetes.io/tls")]
    WrongType(String),
    /// A data key is missing.
    #[error("secret {secret} has no {key}")]
    MissingKey {
        /// `namespace/name`.
        secret: String,
        /// `tls.crt` or `tls.key`.
        key: &'static str,
    },
    /// `tls.crt` holds no PEM certificate.
    #[error("secret {0}: tls.crt holds no PEM certificate")]
    NoCertificate(String),
    /// `tls.crt` is not valid PEM.
    #[error("secret {secret}: tls.crt is not valid PEM")]
    BadCertificate {
        /// `namespace/name`.
        secret: String,
        /// Cause.
        source: rustls::pki_types::pem::Error,
    },
    /// `tls.key` is not a PEM private key.
    #[error("secret {secret}: tls.key is not a PEM private key")]
    BadKey {
        /// `namespace/name`.
        secret: String,
        /// Cause.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the key (unsupported type, or it does not match the certificate).
    #[error("secret {secret}: unusable key pair")]
    KeyPair {
        /// `namespace/name`.
        secret: String,
        /// Cause.
        source: rustls::Error,
    },
    /// The server configuration could not be built.
    #[error("TLS server configuration")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for connections whose SNI no Ingress names.
pub fn default_certificate() -> Result<CertifiedKey, TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERT_CN);
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(vec![cert.der().clone()], der, &provider()).map_err(|source| {
        TlsError::KeyPair {
            secret: "(default)".into(),
            source,
        }
    })
}

/// The certificate and key of a `kubernetes.io/tls` Secret.
pub fn load_secret(secret: &Secret) -> Result<CertifiedKey, TlsError> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret.metadata.name.as_deref().unwrap_or("")
    );
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(TlsError::WrongType(name));
    }
    let data = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| TlsError::MissingKey {
                secret: name.clone(),
                key,
            })
    };
    let (crt, key) = (data("tls.crt")?, data("tls.key")?);
    let certs = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            secret: name.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(name));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::BadKey {
        secret: name.clone(),
        source,
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|source| TlsError::KeyPair {
        secret: name,
        source,
    })
}

/// Certificates by host, immutable (swapped whole after changes).
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertTable {
    /// The certificate for server name `sni`: exact host, then its wildcard.
    pub fn lookup(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let host = request_host(sni);
        self.exact
            .get(&host)
            .or_else(|| wildcard_suffix(&host).and_then(|s| self.wildcard.get(s)))
    }

    /// Number of hosts with a certificate.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// No certificates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed Secret: its resourceVersion and the certificate (or why it is unusable).
type Parsed = (Option<String>, Result<Arc<CertifiedKey>, String>);

/// Parsed Secrets kept between rebuilds, keyed by `namespace/name` and resourceVersion.
#[derive(Default)]
pub struct CertCache(HashMap<String, Parsed>);

impl CertCache {
    fn get(&mut self, key: &str, s: &Secret) -> Result<Arc<CertifiedKey>, String> {
        let rv = s.metadata.resource_version.clone();
        if let Some((have_rv, r)) = self.0.get(key) {
            if *have_rv == rv && rv.is_some() {
                return r.clone();
            }
        }
        let r = load_secret(s).map(Arc::new).map_err(|e| e.to_string());
        self.0.insert(key.to_string(), (rv, r.clone()));
        r
    }
}

/// Builds the certificate table from the served Ingresses and the TLS Secrets. Returns a
/// warning per certificate that could not be used (naming the Secret and its Ingress).
pub fn build(
    ingresses: &[&Ingress],
    secrets: &[&Secret],
    cache: &mut CertCache,
) -> (CertTable, Vec<String>) {
    let by_name: HashMap<String, &Secret> = secrets
        .iter()
        .map(|s| {
            let key = format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or("")
            );
            (key, *s)
        })
        .collect();
    cache.0.retain(|k, _| by_name.contains_key(k));
    let mut ingresses = ingresses.to_vec();
    sort_oldest_first(&mut ingresses);
    let mut table = CertTable::default();
    let mut warnings = Vec::new();
    for ing in ingresses {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("");
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let key = format!("{ns}/{secret}");
            let Some(s) = by_name.get(&key) else {
                warnings.push(format!(
                    "ingress {}: TLS secret {key} not found (or not of type kubernetes.io/tls)",
                    full_name(ing)
                ));
                continue;
            };
            let cert = match cache.get(&key, s) {
                Ok(c) => c,
                Err(e) => {
                    warnings.push(format!("ingress {}: {e}; skipped", full_name(ing)));
                    continue;
                }
            };
            for h in tls.hosts.iter().flatten() {
                match HostMatch::parse(Some(h)) {
                    Ok(HostMatch::Exact(h)) => {
                        table.exact.entry(h).or_insert_with(|| cert.clone());
                    }
                    Ok(HostMatch::Wildcard(s)) => {
                        table.wildcard.entry(s).or_insert_with(|| cert.clone());
                    }
                    Ok(HostMatch::Any) => {}
                    Err(e) => warnings.push(format!("ingress {}: tls host: {e}", full_name(ing))),
                }
            }
        }
    }
    (table, warnings)
}

/// Chooses the certificate by SNI from the current table, else the default certificate.
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver with no Ingress certificates yet.
    pub fn new(default: CertifiedKey) -> Self {
        SniResolver {
            table: ArcSwap::from_pointee(CertTable::default()),
            default: Arc::new(default),
        }
    }

    /// Replaces the table (handshakes in progress keep the one they started with).
    pub fn store(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }

    /// The certificate for `sni` (None: no SNI).
    pub fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        sni.and_then(|s| self.table.load().lookup(s).cloned())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()))
    }
}

/// The rustls server configuration over `resolver`; ALPN offers `h2` when `http2`.
pub fn server_config(
    resolver: Arc<SniResolver>,
    http2: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn pem_pair(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: serde_json::from_value(
                json!({"namespace": "d", "name": name, "resourceVersion": "1"}),
            )
            .unwrap(),
            type_: Some(TLS_SECRET_TYPE.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn sni_exact_then_wildcard_then_default() {
        let (c1, k1) = pem_pair(&["a.example.test"]);
        let (c2, k2) = pem_pair(&["*.example.test"]);
        let s1 = secret("one", &[("tls.crt", &c1), ("tls.key", &k1)]);
        let s2 = secret("two", &[("tls.crt", &c2), ("tls.key", &k2)]);
        let bad = secret("bad", &[("tls.crt", "not pem")]);
        let garbage = secret(
            "garbage",
            &[
                (
                    "tls.crt",
                    "-----BEGIN CERTIFICATE-----\nzz\n-----END CERTIFICATE-----\n",
                ),
                ("tls.key", &k1),
            ],
        );
        let ing: Ingress = serde_json::from_value(json!({
            "metadata": {"namespace": "d", "name": "i"},
            "spec": {"tls": [
                {"hosts": ["a.example.test"], "secretName": "one"},
                {"hosts": ["*.example.test"], "secretName": "two"},
                {"hosts": ["b.bad.test"], "secretName": "bad"},
                {"hosts": ["c.bad.test"], "secretName": "garbage"},
                {"hosts": ["d.bad.test"], "secretName": "missing"}]}}))
        .unwrap();
        let mut cache = CertCache::default();
        let (t, warnings) = build(&[&ing], &[&s1, &s2, &bad, &garbage], &mut cache);
        assert_eq!(t.len(), 2);
        let joined = warnings.join("\n");
        assert!(joined.contains("secret d/bad has no tls.key"), "{joined}");
        assert!(joined.contains("secret d/garbage"), "{joined}");
        assert!(
            joined.contains("TLS secret d/missing not found"),
            "{joined}"
        );
        let leaf = |c: &CertifiedKey| c.end_entity_cert().unwrap().to_vec();
        let one = load_secret(&s1).unwrap();
        let two = load_secret(&s2).unwrap();
        assert_eq!(leaf(t.lookup("a.example.test").unwrap()), leaf(&one));
        assert_eq!(leaf(t.lookup("A.Example.Test").unwrap()), leaf(&one));
        assert_eq!(leaf(t.lookup("z.example.test").unwrap()), leaf(&two));
        assert!(t.lookup("y.z.example.test").is_none());
        assert!(t.lookup("example.test").is_none());

        let resolver = SniResolver::new(default_certificate().unwrap());
        resolver.store(t);
        let d = resolver.choose(Some("unknown.test"));
        assert_eq!(leaf(&d), leaf(&resolver.choose(None)));
        assert_ne!(leaf(&d), leaf(&one));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (c1, _) = pem_pair(&["a.test"]);
        let (_, k2) = pem_pair(&["b.test"]);
        let s = secret("mix", &[("tls.crt", &c1), ("tls.key", &k2)]);
        let e = load_secret(&s).unwrap_err().to_string();
        assert_eq!(e, "secret d/mix: unusable key pair");
    }
}
