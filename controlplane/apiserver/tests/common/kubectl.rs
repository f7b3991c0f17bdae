//! The real kubectl as a given identity, for the identity and RBAC tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kennel_apiserver::RunningApiServer;

/// kubectl with one kubeconfig.
pub struct K<'a> {
    /// The kubectl binary.
    pub bin: &'a Path,
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its discovery cache.
    pub cache: PathBuf,
}

impl K<'_> {
    /// See the name.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(self.bin)
            .args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// See the name.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, "")
    }

    /// See the name.
    pub fn ok_in(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// See the name.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, "");
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl auth can-i ...`: true for "yes", false for "no".
    /// See the name.
    pub fn can_i(&self, args: &[&str]) -> bool {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        let out = self.run(&a, "");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match text.as_str() {
            "yes" => true,
            "no" => false,
            _ => panic!(
                "can-i {args:?}: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// A kubeconfig for `api` authenticating with the bearer `token`, written as `<dir>/<name>.kubeconfig`.
pub fn token_kubeconfig(api: &RunningApiServer, dir: &Path, name: &str, token: &str) -> PathBuf {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&api.ca_pem);
    let user = format!("    token: {token}\n");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: x\n",
        api.url
    );
    let p = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&p, text).unwrap();
    p
}
