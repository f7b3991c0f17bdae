//! Content digests (`sha256:<hex>`) and a hashing writer that verifies them.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Errors about digests.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The string is not `<algorithm>:<hex>`.
    #[error("malformed digest {0:?}")]
    Malformed(String),
    /// Only sha256 is supported.
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
    /// Content does not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Mismatch {
        /// The digest the content was announced with.
        expected: Digest,
        /// The digest of the content received.
        actual: Digest,
    },
    /// Content has a different length than announced.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    Size {
        /// The blob.
        digest: Digest,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
}

/// A validated sha256 content digest, e.g. `sha256:e3b0…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    fn from_hasher(h: Sha256) -> Self {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The hex part (64 lowercase hex digits), safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds a digest from 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        format!("sha256:{hex}").parse()
    }

    /// Checks `data` against this digest.
    pub fn verify(&self, data: &[u8]) -> Result<(), DigestError> {
        let actual = Digest::of(data);
        if &actual == self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                actual,
            })
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        if alg != "sha256" {
            return Err(DigestError::Unsupported(alg.to_string()));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 hasher that also counts bytes.
#[derive(Default, Clone)]
pub struct Hasher {
    h: Sha256,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.h)
    }

    /// Checks the content fed against an expected digest and (optionally) size.
    pub fn verify(self, expected: &Digest, size: Option<u64>) -> Result<(), DigestError> {
        let len = self.len;
        let actual = self.finish();
        if let Some(size) = size {
            if size != len {
                return Err(DigestError::Size {
                    digest: expected.clone(),
                    expected: size,
                    actual: len,
                });
            }
        }
        if &actual != expected {
            return Err(DigestError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Returns the inner writer and the hasher.
    pub fn into_parts(self) -> (W, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty() {
        assert_eq!(Digest::of(b"").as_str(), EMPTY);
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.hex().len(), 64);
        d.verify(b"").unwrap();
        assert!(matches!(d.verify(b"x"), Err(DigestError::Mismatch { .. })));
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
        assert!(matches!(
            "sha256:../../etc".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "nocolon".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(EMPTY
            .to_uppercase()
            .replace("SHA", "sha")
            .parse::<Digest>()
            .is_err());
    }

    #[test]
    fn hasher_checks_size_and_digest() {
        let mut h = Hasher::new();
        h.update(b"abc");
        let d = Digest::of(b"abc");
        h.clone().verify(&d, Some(3)).unwrap();
        assert!(matches!(
            h.clone().verify(&d, Some(4)),
            Err(DigestError::Size { .. })
        ));
        assert!(matches!(
            h.verify(&Digest::of(b"x"), None),
            Err(DigestError::Mismatch { .. })
        ));
    }
}
