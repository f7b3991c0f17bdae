//! `kennel apiserver` as a child process: serves kubectl with the kubeconfig it writes, and keeps
//! objects, credentials and revisions across a restart on the same data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Server, String) {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "# extra users\nnode-token,system:node:n1,n1\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kennel"))
        .args([
            "apiserver",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--token-file")
        .arg(&tokens)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kennel");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    // Keep draining stdout so the server never writes to a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .to_string();
    (server, url)
}

fn kubectl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dir.join("admin.kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn apiserver_binary_serves_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start(dir.path());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    kubectl(
        dir.path(),
        &["create", "configmap", "survivor", "--from-literal=a=b"],
    );
    let rv1 = kubectl(
        dir.path(),
        &[
            "get",
            "cm",
            "survivor",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    );
    let token = std::fs::read_to_string(dir.path().join("pki/admin.token")).unwrap();
    drop(server);

    let (_server, url2) = start(dir.path());
    assert_ne!(url, url2, "new free port, kubeconfig rewritten");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pki/admin.token")).unwrap(),
        token
    );
    let rv2 = kubectl(
        dir.path(),
        &[
            "get",
            "cm",
            "survivor",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    );
    assert_eq!(rv1, rv2);
    kubectl(dir.path(), &["label", "cm", "survivor", "again=yes"]);
    // A token from --token-file is accepted, with the CA from the data dir.
    let ca = dir.path().join("pki/ca.crt");
    let out = Command::new("kubectl")
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &url2,
            "--token",
            "node-token",
        ])
        .arg("--certificate-authority")
        .arg(&ca)
        .arg("--cache-dir")
        .arg(dir.path().join("cache2"))
        .args(["get", "cm", "survivor", "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/survivor",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rv3: i64 = kubectl(
        dir.path(),
        &[
            "get",
            "cm",
            "survivor",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    )
    .parse()
    .unwrap();
    assert!(
        rv3 > rv2.parse::<i64>().unwrap(),
        "revisions keep increasing after restart"
    );
}

#[test]
fn help_lists_subcommands() {
    let out = Command::new(env!("CARGO_BIN_EXE_kennel"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("apiserver"));
    let out = Command::new(env!("CARGO_BIN_EXE_kennel"))
        .args(["apiserver", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
