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
    std::fs::write(
        &tokens,
        "# extra users\nops-token,ops,u-ops,\"system:masters\"\nnode-token,system:node:n1,n1\n",
    )
    .unwrap();
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
    // A token from --token-file is accepted with its groups (here system:masters), with the CA
    // from the data dir; another token's user is authorized by RBAC, which grants it nothing.
    let ca = dir.path().join("pki/ca.crt");
    let out = Command::new("kubectl")
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &url2,
            "--token",
            "ops-token",
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"User "system:node:n1" cannot get resource "configmaps""#),
        "{err}"
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
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["up", "down", "node", "apiserver"] {
        assert!(help.contains(sub), "--help lists {sub}: {help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kennel"))
        .args(["apiserver", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

/// `kennel node` alone against `kennel apiserver`, with no runtime behind its CRI socket: it
/// registers the Node (capacity, addresses, nodeInfo), holds a Lease, reports NotReady with
/// the reason and keeps the `not-ready` taint — all read back with kubectl.
#[test]
fn node_agent_registers_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _url) = start(dir.path());
    let child = Command::new(env!("CARGO_BIN_EXE_kennel"))
        .args(["node", "--node-name", "n1", "--node-ip", "127.0.0.1"])
        .arg("--kubeconfig")
        .arg(dir.path().join("admin.kubeconfig"))
        .arg("--cri-socket")
        .arg(dir.path().join("no-runtime.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kennel node");
    let _node = Server(child);
    let ready = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}|{.status.conditions[?(@.type==\"Ready\")].message}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let out = Command::new("kubectl")
            .args(["get", "node", "n1", "-o", ready])
            .env("KUBECONFIG", dir.path().join("admin.kubeconfig"))
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.starts_with("False|") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node n1 never registered: {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(status.contains("container runtime is down"), "{status}");
    let info = kubectl(
        dir.path(),
        &["get", "node", "n1", "-o", "jsonpath={.status.addresses[0].address} {.status.capacity.pods} {.status.nodeInfo.operatingSystem} {.spec.taints[0].key}"],
    );
    assert_eq!(info, "127.0.0.1 110 linux node.kubernetes.io/not-ready");
    let holder = kubectl(
        dir.path(),
        &[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "n1",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert_eq!(holder, "n1");
    let wide = kubectl(dir.path(), &["get", "nodes"]);
    assert!(wide.contains("n1") && wide.contains("NotReady"), "{wide}");
}
