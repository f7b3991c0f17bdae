//! Test support for this and other crates: a real Debian `docker-registry` on 127.0.0.1 with a
//! temporary config and storage (optionally TLS and htpasswd basic auth), stopped on drop, and the
//! project's test images pushed into it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::auth::Credentials;
use crate::digest::Digest;
use crate::registry::RegistryConfig;

/// The registry binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Errors starting the registry.
#[derive(Debug, thiserror::Error)]
pub enum TestRegistryError {
    /// A helper command (`docker-registry`, `htpasswd`, `openssl`) could not run or failed.
    #[error("{cmd}: {detail}")]
    Command {
        /// The command.
        cmd: String,
        /// What went wrong.
        detail: String,
    },
    /// File setup failed.
    #[error("setting up registry files: {0}")]
    Io(#[from] std::io::Error),
    /// The registry did not answer in time.
    #[error("docker-registry did not come up on {addr}: {log}")]
    Timeout {
        /// Its address.
        addr: SocketAddr,
        /// Its log.
        log: String,
    },
}

/// Options for [`TestRegistry::start`].
#[derive(Debug, Clone, Default)]
pub struct TestRegistryOptions {
    /// Serve HTTPS with a fresh self-signed certificate for 127.0.0.1.
    pub tls: bool,
    /// Require this user (htpasswd, bcrypt).
    pub basic_auth: Option<Credentials>,
    /// Require bearer tokens from a token server started alongside, which issues RS256 JWTs (signed with
    /// openssl) to this user only. Exclusive with `basic_auth`.
    pub token_auth: Option<Credentials>,
}

/// A running `docker-registry`, killed on drop.
#[derive(Debug)]
pub struct TestRegistry {
    /// Listen address.
    pub addr: SocketAddr,
    /// CA (self-signed cert) PEM when TLS is on.
    pub ca_pem: Option<Vec<u8>>,
    /// The token server, when bearer auth is on.
    pub token_server: Option<crate::testing_token::TokenServer>,
    dir: tempfile::TempDir,
    child: Child,
}

pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, TestRegistryError> {
    let name = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| TestRegistryError::Command {
        cmd: name.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(TestRegistryError::Command {
            cmd: name,
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

impl TestRegistry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub fn start(opts: TestRegistryOptions) -> Result<Self, TestRegistryError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&opts) {
                Ok(r) => return Ok(r),
                Err(e @ TestRegistryError::Timeout { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TestRegistryError::Command {
            cmd: REGISTRY_BIN.into(),
            detail: "failed".into(),
        }))
    }

    fn try_start(opts: &TestRegistryOptions) -> Result<Self, TestRegistryError> {
        let dir = tempfile::Builder::new()
            .prefix("kennel-registry-")
            .tempdir()?;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage)?;
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        let mut ca_pem = None;
        if opts.tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
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
                    "/CN=127.0.0.1",
                ])
                .args([
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-addext",
                    "basicConstraints=critical,CA:FALSE",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert))?;
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            ca_pem = Some(std::fs::read(&cert)?);
        }
        if let Some(c) = &opts.basic_auth {
            let entry = run(Command::new("htpasswd").args(["-Bbn", &c.username, &c.password]))?;
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, entry)?;
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: kennel-test\n    path: {}\n",
                path.display()
            );
        }
        let mut token_server = None;
        if let Some(c) = &opts.token_auth {
            let ts = crate::testing_token::TokenServer::start(dir.path(), c.clone())?;
            cfg += &format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                ts.addr,
                crate::testing_token::SERVICE,
                crate::testing_token::ISSUER,
                ts.cert_path.display()
            );
            token_server = Some(ts);
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| TestRegistryError::Command {
                cmd: REGISTRY_BIN.into(),
                detail: format!("{e} (install docker-registry)"),
            })?;
        let mut reg = TestRegistry {
            addr,
            ca_pem,
            token_server,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = reg.child.try_wait() {
                break;
            }
            if reg.answers() {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default();
        Err(TestRegistryError::Timeout { addr, log })
    }

    /// True once something listens and speaks (TLS or HTTP) on the port.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return false;
        };
        if self.ca_pem.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        let mut buf = [0u8; 12];
        s.read(&mut buf)
            .is_ok_and(|n| n >= 12 && buf.starts_with(b"HTTP/1."))
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A client configuration that reaches this registry (plain HTTP or its CA, plus credentials).
    pub fn client_config(&self, credentials: Option<Credentials>) -> RegistryConfig {
        let mut cfg = RegistryConfig::default();
        match &self.ca_pem {
            Some(pem) => cfg.ca_pem.push(pem.clone()),
            None => cfg.plain_http.push(self.host()),
        }
        if let Some(c) = credentials {
            cfg.credentials.insert(self.host(), c);
        }
        cfg
    }

    /// The registry's data file of a blob (for corruption tests).
    pub fn blob_data_path(&self, d: &Digest) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }

    /// The temporary directory holding config, storage and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
