//! ServiceAccount tokens: ES256 (ECDSA P-256) JWTs shaped like upstream's bound tokens, signed
//! with a key pair kept at `<pki_dir>/sa.key` (PKCS#8 PEM, created once, 0600).

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

use super::AuthnError;

/// File name (in the pki directory) of the ServiceAccount token signing key.
pub const SA_KEY_FILE: &str = "sa.key";
/// File name (in the pki directory) of the public half (PEM, for other verifiers).
pub const SA_PUB_FILE: &str = "sa.pub";
/// Clock skew tolerated on `exp`/`nbf`/`iat` (upstream's go-jose default leeway).
pub const LEEWAY_SECS: i64 = 60;

/// DER prefix of a P-256 SubjectPublicKeyInfo before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A name and uid pair of the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: Ref,
    /// The bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    /// The bound Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    /// The node (of the bound pod, or the bound Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

/// The claims of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: String,
    /// Not before.
    pub nbf: i64,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// The private claim.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaims,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kid: String,
}

/// Audience claim: upstream accepts a string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct WireClaims {
    #[serde(default)]
    aud: Option<Aud>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubeClaims>,
}

/// The signing key pair.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// Loads `<pki_dir>/sa.key`, creating it (atomically, 0600) when missing. Two servers racing
    /// on a fresh directory end up with the same key: the loser reads the winner's file.
    pub fn load_or_create(pki_dir: &Path) -> Result<Self, AuthnError> {
        let path = pki_dir.join(SA_KEY_FILE);
        let io = |e: std::io::Error| AuthnError::Key(format!("{}: {e}", path.display()));
        let pem = match std::fs::read_to_string(&path) {
            Ok(p) if !p.trim().is_empty() => p,
            Ok(_) => return Err(AuthnError::Key(format!("{}: empty", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| AuthnError::Key("key generation failed".into()))?;
                let pem = pem_encode("PRIVATE KEY", doc.as_ref());
                std::fs::create_dir_all(pki_dir).map_err(io)?;
                // NamedTempFile is created 0600; persist_noclobber keeps a concurrent winner's key.
                let mut tmp = tempfile::NamedTempFile::new_in(pki_dir).map_err(io)?;
                tmp.write_all(pem.as_bytes()).map_err(io)?;
                tmp.as_file().sync_all().map_err(io)?;
                match tmp.persist_noclobber(&path) {
                    Ok(_) => pem,
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read_to_string(&path).map_err(io)?
                    }
                    Err(e) => return Err(io(e.error)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        let der = pem_decode(&pem, "PRIVATE KEY")
            .ok_or_else(|| AuthnError::Key(format!("{}: not a PKCS#8 PEM key", path.display())))?;
        let key = Self::from_pkcs8(&der)
            .map_err(|e| AuthnError::Key(format!("{}: {e}", path.display())))?;
        let pub_path = pki_dir.join(SA_PUB_FILE);
        let pub_pem = pem_encode("PUBLIC KEY", &key.spki_der());
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(pub_pem.as_str()) {
            crate::pki::write_atomic(&pub_path, pub_pem.as_bytes())
                .map_err(|e| AuthnError::Key(e.to_string()))?;
        }
        Ok(key)
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, AuthnError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| AuthnError::Key(format!("bad ECDSA P-256 key: {e}")))?;
        let mut key = SigningKey {
            pair,
            kid: String::new(),
            rng,
        };
        // Upstream's key id: base64url(SHA-256(PKIX DER of the public key)).
        key.kid =
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &key.spki_der()));
        Ok(key)
    }

    /// The key id (`kid` header).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut v = P256_SPKI_PREFIX.to_vec();
        v.extend_from_slice(self.pair.public_key().as_ref());
        v
    }

    /// The public key as a JSON Web Key Set (served at `/openid/v1/jwks` upstream).
    pub fn jwks(&self) -> serde_json::Value {
        let point = self.pair.public_key().as_ref();
        serde_json::json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthnError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let h = serde_json::to_vec(&header).map_err(|e| AuthnError::Key(e.to_string()))?;
        let c = serde_json::to_vec(claims).map_err(|e| AuthnError::Key(e.to_string()))?;
        let signing_input = format!("{}.{}", enc(&h), enc(&c));
        let sig = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| AuthnError::Key("signing failed".into()))?;
        Ok(format!("{signing_input}.{}", enc(sig.as_ref())))
    }

    /// Verifies a token's signature, issuer, time window and audiences (any of `audiences`);
    /// returns its claims and the audiences it was accepted for. Does not look at the store.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<(Claims, Vec<String>), AuthnError> {
        let inv = |s: &str| AuthnError::Invalid(s.to_string());
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(inv("not a JWT"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| inv("malformed JWT header"))?;
        if header.alg != "ES256" {
            return Err(inv("unexpected signing algorithm"));
        }
        if !header.kid.is_empty() && header.kid != self.kid {
            return Err(inv("unknown signing key"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| inv("malformed JWT signature"))?;
        let public =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref());
        public
            .verify(&token.as_bytes()[..h.len() + 1 + c.len()], &sig)
            .map_err(|_| inv("invalid signature"))?;
        let wire: WireClaims = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| inv("malformed JWT claims"))?;
        if wire.iss != issuer {
            return Err(inv("token issuer is not accepted"));
        }
        let exp = wire.exp.ok_or_else(|| inv("token has no expiry"))?;
        if now > exp + LEEWAY_SECS {
            return Err(inv("token has expired"));
        }
        if let Some(nbf) = wire.nbf {
            if now + LEEWAY_SECS < nbf {
                return Err(inv("token is not valid yet"));
            }
        }
        if let Some(iat) = wire.iat {
            if now + LEEWAY_SECS < iat {
                return Err(inv("token was issued in the future"));
            }
        }
        let aud = match wire.aud {
            Some(Aud::One(a)) => vec![a],
            Some(Aud::Many(v)) => v,
            None => Vec::new(),
        };
        let accepted: Vec<String> = audiences
            .iter()
            .filter(|a| aud.contains(a))
            .cloned()
            .collect();
        if accepted.is_empty() {
            return Err(inv("token audiences are not accepted"));
        }
        let kubernetes = wire
            .kubernetes
            .ok_or_else(|| inv("token has no kubernetes.io claim"))?;
        let want_sub = format!(
            "{}{}:{}",
            crate::auth::user::SERVICE_ACCOUNT_PREFIX,
            kubernetes.namespace,
            kubernetes.serviceaccount.name
        );
        if wire.sub != want_sub {
            return Err(inv("token subject does not match its ServiceAccount"));
        }
        let claims = Claims {
            aud,
            exp,
            iat: wire.iat.unwrap_or(0),
            iss: wire.iss,
            jti: wire.jti,
            nbf: wire.nbf.unwrap_or(0),
            sub: wire.sub,
            kubernetes,
        };
        Ok((claims, accepted))
    }
}

/// Whether `token` looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].split_whitespace().collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, aud: &str) -> Claims {
        Claims {
            aud: vec![aud.into()],
            exp: now + 3600,
            iat: now,
            iss: "https://iss".into(),
            jti: "j1".into(),
            nbf: now,
            sub: "system:serviceaccount:default:builder".into(),
            kubernetes: KubeClaims {
                namespace: "default".into(),
                serviceaccount: Ref {
                    name: "builder".into(),
                    uid: "sa-uid".into(),
                },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    #[test]
    fn sign_verify_tamper_audience_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(dir.path()).unwrap();
        let now = 1_700_000_000;
        let auds = vec!["api".to_string()];
        let t = key.sign(&claims(now, "api")).unwrap();
        let (c, acc) = key.verify(&t, "https://iss", &auds, now + 10).unwrap();
        assert_eq!(c, claims(now, "api"));
        assert_eq!(acc, auds);
        // Tampered signature and payload.
        let mut bad = t.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(key.verify(&bad, "https://iss", &auds, now).is_err());
        let mut c2 = claims(now, "api");
        c2.kubernetes.serviceaccount.uid = "other".into();
        let forged = key.sign(&c2).unwrap();
        let spliced = format!(
            "{}.{}.{}",
            t.split('.').next().unwrap(),
            forged.split('.').nth(1).unwrap(),
            t.split('.').nth(2).unwrap()
        );
        let e = key.verify(&spliced, "https://iss", &auds, now).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        // Wrong audience, issuer, expiry, another key.
        let e = key
            .verify(&t, "https://iss", &["other".into()], now)
            .unwrap_err();
        assert!(e.to_string().contains("audience"), "{e}");
        assert!(key.verify(&t, "https://x", &auds, now).is_err());
        let e = key
            .verify(&t, "https://iss", &auds, now + 3600 + LEEWAY_SECS + 1)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(key
            .verify(&t, "https://iss", &auds, now + 3600 + 30)
            .is_ok());
        let other = tempfile::tempdir().unwrap();
        let key2 = SigningKey::load_or_create(other.path()).unwrap();
        assert!(key2.verify(&t, "https://iss", &auds, now).is_err());
    }

    #[test]
    fn key_is_kept_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k1 = SigningKey::load_or_create(dir.path()).unwrap();
        let k2 = SigningKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.kid(), k2.kid());
        let t = k1.sign(&claims(100, "a")).unwrap();
        assert!(k2.verify(&t, "https://iss", &["a".into()], 100).is_ok());
        let mode = std::fs::metadata(dir.path().join(SA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(std::fs::read_to_string(dir.path().join(SA_PUB_FILE))
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        let jwks = k1.jwks();
        assert_eq!(jwks["keys"][0]["kid"], k1.kid());
        assert!(looks_like_jwt(&t));
        assert!(!looks_like_jwt("abcdef.0123456789abcdef"));
    }
}
