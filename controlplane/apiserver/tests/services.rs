//! Service ClusterIP and NodePort allocation through the real kubectl and kube-rs: values
//! survive applies and replaces that omit them, explicit duplicates get 422, concurrent
//! creates never share a value (SQLite and etcd), deleted and changed Services give their
//! values back, and a restarted server — also one whose reservation keys were lost — still
//! refuses duplicates.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::server::{Backend, TestServer};
use k8s_openapi::api::core::v1::Service;
use kennel_apiserver::ApiServerConfig;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};

struct Kubectl {
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = c.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write kubectl stdin");
        drop(input);
        c.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "kubectl {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn svc(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", "svc", name, "-o", "json"], None)).expect("json")
    }
}

fn manifest(name: &str, extra_spec: &str, label: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels:\n    rev: \"{label}\"\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n{extra_spec}"
    )
}

fn ip_and_port(s: &Value) -> (String, i64) {
    (
        s["spec"]["clusterIP"].as_str().unwrap_or("").to_string(),
        s["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_through_kubectl() {
    let server = TestServer::start(Backend::Sqlite).await;
    let k = Kubectl {
        kubeconfig: server.api.kubeconfig.clone(),
    };
    let np = "  type: NodePort\n";

    // Allocated values survive an apply and a replace of a manifest that omits them.
    k.ok(&["apply", "-f", "-"], Some(&manifest("web", np, "1")));
    let first = ip_and_port(&k.svc("web"));
    assert!(first.0.starts_with("10.96.1."), "{first:?}");
    assert!((30000..=32767).contains(&first.1), "{first:?}");
    k.ok(&["apply", "-f", "-"], Some(&manifest("web", np, "2")));
    assert_eq!(ip_and_port(&k.svc("web")), first);
    k.ok(&["replace", "-f", "-"], Some(&manifest("web", np, "3")));
    let s = k.svc("web");
    assert_eq!(s["metadata"]["labels"]["rev"], "3");
    assert_eq!(ip_and_port(&s), first);
    let e = k.fails(
        &["apply", "-f", "-"],
        Some(&manifest(
            "web",
            &format!("{np}  clusterIP: 10.96.7.7\n"),
            "4",
        )),
    );
    assert!(e.contains("may not change once set"), "{e}");

    // Explicit duplicates, addresses outside the range and the DNS address are refused.
    let dup_ip = format!("{np}  clusterIP: {}\n", first.0);
    let e = k.fails(&["create", "-f", "-"], Some(&manifest("dup", &dup_ip, "1")));
    assert!(
        e.contains("is invalid") && e.contains("provided IP is already allocated"),
        "{e}"
    );
    let dup_port = format!("{np}  ports:\n  - port: 80\n    nodePort: {}\n", first.1);
    let m = manifest("dup", "", "1").replace(
        "  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
        &dup_port,
    );
    let e = k.fails(&["create", "-f", "-"], Some(&m));
    assert!(e.contains("provided port is already allocated"), "{e}");
    let e = k.fails(
        &["create", "-f", "-"],
        Some(&manifest("out", "  clusterIP: 10.112.0.5\n", "1")),
    );
    assert!(e.contains("The range of valid IPs is 10.96.0.0/12"), "{e}");
    let e = k.fails(
        &["create", "-f", "-"],
        Some(&manifest("dns", "  clusterIP: 10.96.0.10\n", "1")),
    );
    assert!(e.contains("reserved for the cluster DNS Service"), "{e}");
    let dns = manifest("kube-dns", "  clusterIP: 10.96.0.10\n", "1");
    k.ok(&["-n", "kube-system", "create", "-f", "-"], Some(&dns));
    k.fails(&["get", "svc", "dup"], None);

    // Deleting gives the values back at once; a type change gives the node port back.
    k.ok(&["delete", "svc", "web"], None);
    k.ok(
        &["create", "-f", "-"],
        Some(&manifest("again", &dup_ip, "1")),
    );
    assert_eq!(ip_and_port(&k.svc("again")).0, first.0);
    k.ok(
        &[
            "patch",
            "svc",
            "again",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ],
        None,
    );
    assert_eq!(ip_and_port(&k.svc("again")), (first.0.clone(), 0));
    k.ok(
        &["create", "-f", "-"],
        Some(&m.replace("name: dup", "name: port-again")),
    );
    assert_eq!(ip_and_port(&k.svc("port-again")).1, first.1);
}

async fn concurrent_creates(server: &TestServer) {
    let kc = kube::config::Kubeconfig::read_from(&server.api.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let api: Api<Service> = Api::namespaced(client, "default");
    let creates = (0..40).map(|i| {
        let api = api.clone();
        async move {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": format!("c{i}")},
                "spec": {"type": "NodePort", "ports": [{"port": 80}]},
            }))
            .expect("service");
            api.create(&PostParams::default(), &svc)
                .await
                .expect("create")
        }
    });
    let made = futures::future::join_all(creates).await;
    let ips: std::collections::HashSet<_> = made
        .iter()
        .map(|s| s.spec.as_ref().and_then(|p| p.cluster_ip.clone()))
        .collect();
    let ports: std::collections::HashSet<_> = made
        .iter()
        .map(|s| s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port)
        .collect();
    assert_eq!(ips.len(), 40, "{ips:?}");
    assert_eq!(ports.len(), 40, "{ports:?}");
    for i in 0..40 {
        api.delete(&format!("c{i}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_share_sqlite() {
    concurrent_creates(&TestServer::start(Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_share_etcd() {
    concurrent_creates(&TestServer::start(Backend::Etcd).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_repairs_and_keeps_refusing_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = kennel_apiserver::start(ApiServerConfig::new(dir.path()))
        .await
        .expect("start");
    let k = Kubectl {
        kubeconfig: api.kubeconfig.clone(),
    };
    k.ok(
        &["apply", "-f", "-"],
        Some(&manifest("keep", "  type: NodePort\n", "1")),
    );
    let held = ip_and_port(&k.svc("keep"));
    // Lose every reservation key (as data written before the allocator existed), and leave
    // one that no Service holds (as a crash between reserving and writing would).
    for prefix in ["/ranges/serviceips/", "/ranges/servicenodeports/"] {
        for kv in api.store.list(prefix, 0, None).await.expect("list").items {
            api.store.delete(&kv.key, None).await.expect("delete");
        }
    }
    let orphan = json!({"namespace": "default", "name": "gone", "uid": "x", "reservedAt": 1});
    api.store
        .create(
            "/ranges/serviceips/10.96.9.9",
            orphan.to_string().into_bytes(),
        )
        .await
        .expect("orphan");
    drop(api);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let api = kennel_apiserver::start(ApiServerConfig::new(dir.path()))
        .await
        .expect("restart");
    let k = Kubectl {
        kubeconfig: api.kubeconfig.clone(),
    };
    let dup = format!("  type: NodePort\n  clusterIP: {}\n", held.0);
    let e = k.fails(&["create", "-f", "-"], Some(&manifest("dup", &dup, "1")));
    assert!(e.contains("provided IP is already allocated"), "{e}");
    // The orphaned address is free again.
    k.ok(
        &["create", "-f", "-"],
        Some(&manifest("orphan", "  clusterIP: 10.96.9.9\n", "1")),
    );
    // The kubernetes Service's address is held too.
    let e = k.fails(
        &["create", "-f", "-"],
        Some(&manifest("api", "  clusterIP: 10.96.0.1\n", "1")),
    );
    assert!(e.contains("provided IP is already allocated"), "{e}");
}
