//! The official Python Kubernetes client (Debian's `python3-kubernetes`, a client we did not
//! write) against the API server: list with a label selector, a watch from a resourceVersion
//! (the client sends `watch=True`), merge patch, 404/409 as `ApiException`s with upstream's
//! reasons, empty ConfigMap values kept, and a CRD plus a custom object (defaulted, and refused
//! with 422 when invalid). The script is `tests/python/client.py`.

mod common;

use std::process::Command;

use common::server::{Backend, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kubernetes_client() {
    let server = TestServer::start(Backend::Sqlite).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let kubeconfig = server.api.kubeconfig.clone();
    // Debian's interpreter: the package installs into its dist-packages.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/python3")
            .arg(script)
            .arg(&kubeconfig)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "client.py failed:\n{stdout}\n{stderr}"
    );
}
