//! A minimal registry token server for tests (Docker token auth): `GET /token?service=&scope=` with basic
//! credentials returns an RS256 JWT whose `x5c` header carries a self-signed certificate the registry trusts
//! (`rootcertbundle`). Signing uses the `openssl` command, so no crypto code lives here.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;

use crate::auth::Credentials;
use crate::testing::{run, TestRegistryError};

/// `service` the registry expects in tokens.
pub const SERVICE: &str = "kennel-test-registry";
/// `iss` the registry trusts.
pub const ISSUER: &str = "kennel-test-issuer";

/// A running token server (a thread), stopped on drop.
#[derive(Debug)]
pub struct TokenServer {
    /// Listen address.
    pub addr: SocketAddr,
    /// Certificate the registry must trust.
    pub cert_path: PathBuf,
    /// Tokens issued so far.
    pub issued: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

struct Issuer {
    key: PathBuf,
    cert_b64: String,
    creds: Credentials,
    issued: Arc<AtomicU64>,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| {
                std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Issuer {
    fn sign(&self, input: &str) -> Option<Vec<u8>> {
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        out.status.success().then_some(out.stdout)
    }

    fn token(&self, query: &str) -> Option<String> {
        let mut access = Vec::new();
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            if k == "scope" {
                let scope = percent_decode(v);
                let mut parts = scope.splitn(3, ':');
                if let (Some(t), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    access.push(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
                }
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": self.creds.username, "aud": SERVICE,
            "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("kennel-{n}"),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.sign(&input)?;
        Some(format!("{input}.{}", b64url(&sig)))
    }

    fn handle(&self, s: TcpStream) -> std::io::Result<()> {
        let mut r = BufReader::new(s.try_clone()?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut authorized = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("authorization")
                    && v.trim() == self.creds.basic_header()
                {
                    authorized = true;
                }
            }
        }
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let (status, body) = match (target.starts_with("/token"), authorized) {
            (false, _) => ("404 Not Found", String::new()),
            (true, false) => (
                "401 Unauthorized",
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}".to_string(),
            ),
            (true, true) => match self.token(query) {
                Some(t) => (
                    "200 OK",
                    serde_json::json!({"token": t, "expires_in": 600}).to_string(),
                ),
                None => ("500 Internal Server Error", String::new()),
            },
        };
        let mut s = s;
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

impl TokenServer {
    /// Creates a signing key and certificate in `dir` and serves tokens to `creds` on a loopback port.
    pub fn start(dir: &Path, creds: Credentials) -> Result<Self, TestRegistryError> {
        let (key, cert) = (dir.join("token-key.pem"), dir.join("token-cert.pem"));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kennel-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        let pem = std::fs::read_to_string(&cert)?;
        let cert_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicU64::new(0));
        let issuer = Issuer {
            key,
            cert_b64,
            creds,
            issued: issued.clone(),
        };
        let st = stop.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(s) = s {
                    let _ = issuer.handle(s);
                }
            }
        });
        Ok(Self {
            addr,
            cert_path: cert,
            issued,
            stop,
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
