//! `kubectl logs` end to end except the pod lifecycle: the real API server (TLS + token) in-process,
//! the node's log server on a free port with a node certificate issued by the cluster CA and the
//! cluster's kubelet-client token, CRI-format log files for pods (two runs of one container), and
//! clients we did not write — kube-rs `Api::<Pod>::logs`/`log_stream` and the real `kubectl logs`
//! (1.32 on PATH and 1.27) — through `pods/{name}/log`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kennel_apiserver::pki;
use kennel_apiserver::testing::TestApiServer;
use kennel_apiserver::RunningApiServer;
use kennel_node::server::{self, LogServerConfig, RunningLogServer};
use kube::api::{Api, LogParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

const T: Duration = Duration::from_secs(20);
const OLD1: &str = "2024-05-01T10:00:00.123456789Z";
const OLD2: &str = "2024-05-01T10:00:01Z";

fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

async fn next_kubectl_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(T, lines.next_line())
        .await
        .expect("kubectl -f line in time")
        .expect("read kubectl")
        .expect("kubectl -f still running")
}

async fn next_line<S>(s: &mut S) -> Option<String>
where
    S: futures::Stream<Item = std::io::Result<String>> + Unpin,
{
    tokio::time::timeout(T, s.try_next())
        .await
        .expect("line in time")
        .expect("stream ok")
}

/// Open file handles of this process (API server and node server both run here) on `path`.
fn open_handles(path: &Path) -> usize {
    let path = path.canonicalize().expect("canonical path");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == path))
        .count()
}

/// Waits until no reader holds `path` open (a follow stream ended on the node).
async fn wait_closed(path: &Path) {
    for _ in 0..100 {
        if open_handles(path) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} is still open: the node kept streaming", path.display());
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append log");
}

/// The cluster for this test: API server, logs root, node log servers.
struct Cluster {
    api: RunningApiServer,
    dir: tempfile::TempDir,
    logs: tempfile::TempDir,
    client: Client,
    _servers: Vec<RunningLogServer>,
}

impl Cluster {
    fn pki_dir(&self) -> PathBuf {
        pki::pki_dir(self.dir.path())
    }

    /// Starts a log server for node `name` (cert from the cluster CA unless `cert` is given,
    /// the cluster's kubelet-client token unless `token` is given) and registers the Node with
    /// its address and port in its status.
    async fn add_node(&mut self, name: &str, cert: Option<(String, String)>, token: Option<&str>) {
        let (cert_pem, key_pem) = cert.unwrap_or_else(|| {
            let ip: IpAddr = "127.0.0.1".parse().unwrap();
            pki::issue_node_cert(&self.pki_dir(), name, &[ip]).expect("node cert")
        });
        let client_token = match token {
            Some(t) => t.to_string(),
            None => pki::read_kubelet_client_token(&self.pki_dir()).expect("kubelet token"),
        };
        let srv = server::spawn(LogServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_pem,
            key_pem,
            client_token,
            logs_root: self.logs.path().to_path_buf(),
            cri_socket: None,
            node_name: "n1".into(),
        })
        .await
        .expect("log server");
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}
        }))
        .unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": srv.addr.port()}},
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
        self._servers.push(srv);
    }

    /// Creates pod `name` with `containers` on `node` (unscheduled for `None`); returns its uid.
    async fn add_pod(&self, name: &str, containers: &[&str], node: Option<&str>) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let mut spec = json!({"containers": containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect::<Vec<_>>()});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        created.metadata.uid.expect("uid")
    }

    fn log_path(&self, pod: &str, uid: &str, container: &str, run: u32) -> PathBuf {
        let p = kennel_node::logs::container_log_path(
            self.logs.path(),
            "default",
            pod,
            uid,
            container,
            run,
        );
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }
}

async fn start() -> Cluster {
    let TestApiServer { api, dir, client } = TestApiServer::start().await;
    Cluster {
        api,
        dir,
        logs: tempfile::tempdir().expect("logs root"),
        client,
        _servers: Vec::new(),
    }
}

fn kubectl_bins() -> Vec<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("run sh");
    let kubectl = PathBuf::from(String::from_utf8_lossy(&on_path.stdout).trim());
    assert!(kubectl.exists(), "kubectl is not on PATH");
    let old = kubectl.parent().unwrap().join("kubectl.1.27");
    assert!(old.exists(), "{} is missing", old.display());
    vec![kubectl, old]
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig);
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "{} {args:?} unexpectedly succeeded: {}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_end_to_end() {
    let mut c = start().await;
    c.add_node("node-1", None, None).await;

    // web: one container, two runs
    let web = c.add_pod("web", &["app"], Some("node-1")).await;
    let run0 = c.log_path("web", &web, "app", 0);
    append(
        &run0,
        &format!("{OLD1} stdout F first run\n{OLD1} stderr F first run failed\n"),
    );
    let run1 = c.log_path("web", &web, "app", 1);
    let recent = now_ts();
    append(
        &run1,
        &format!(
            "{OLD1} stdout F hello\n\
             not a CRI record\n\
             {OLD2} stderr P part-\n\
             {OLD2} stderr P ial \n\
             {OLD2} stderr F joined\n\
             {recent} stdout F recent line\n"
        ),
    );
    let mut current = "hello\npart-ial joined\nrecent line\n".to_string();
    // duo: two containers, one run each
    let duo = c.add_pod("duo", &["a", "b"], Some("node-1")).await;
    append(
        &c.log_path("duo", &duo, "a", 0),
        &format!("{OLD1} stdout F from a\n"),
    );
    append(
        &c.log_path("duo", &duo, "b", 0),
        &format!("{OLD1} stdout F from b\n"),
    );
    // bound to node-1 but no logs there yet; unscheduled; bound to a node that does not exist
    c.add_pod("ghost", &["app"], Some("node-1")).await;
    c.add_pod("pending", &["app"], None).await;
    c.add_pod("lost", &["app"], Some("node-x")).await;

    // ---- kube-rs ----
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let lp = LogParams::default;
    assert_eq!(pods.logs("web", &lp()).await.unwrap(), current);
    let with = |f: &dyn Fn(&mut LogParams)| {
        let mut p = lp();
        f(&mut p);
        p
    };
    assert_eq!(
        pods.logs("web", &with(&|p| p.container = Some("app".into())))
            .await
            .unwrap(),
        current
    );
    assert_eq!(
        pods.logs("web", &with(&|p| p.previous = true))
            .await
            .unwrap(),
        "first run\nfirst run failed\n"
    );
    assert_eq!(
        pods.logs("web", &with(&|p| p.tail_lines = Some(1)))
            .await
            .unwrap(),
        "recent line\n"
    );
    let stamped = pods
        .logs("web", &with(&|p| p.timestamps = true))
        .await
        .unwrap();
    assert_eq!(
        stamped.lines().take(2).collect::<Vec<_>>(),
        [
            "2024-05-01T10:00:00.123456789Z hello",
            "2024-05-01T10:00:01Z part-ial joined"
        ]
    );
    assert!(stamped.lines().nth(2).unwrap().ends_with(" recent line"));
    assert_eq!(
        pods.logs("web", &with(&|p| p.since_seconds = Some(3600)))
            .await
            .unwrap(),
        "recent line\n"
    );
    let since: k8s_openapi::jiff::Timestamp = "2024-05-01T10:00:01Z".parse().unwrap();
    assert_eq!(
        pods.logs("web", &with(&|p| p.since_time = Some(since)))
            .await
            .unwrap(),
        "part-ial joined\nrecent line\n"
    );
    assert_eq!(
        pods.logs("web", &with(&|p| p.limit_bytes = Some(8)))
            .await
            .unwrap(),
        "hello\npa"
    );
    assert_eq!(
        pods.logs("duo", &with(&|p| p.container = Some("b".into())))
            .await
            .unwrap(),
        "from b\n"
    );
    let api_err = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    };
    assert_eq!(
        api_err(pods.logs("duo", &lp()).await.unwrap_err()),
        (
            400,
            "a container name must be specified for pod duo, choose one of: [a b]".into()
        )
    );
    assert_eq!(
        api_err(
            pods.logs("web", &with(&|p| p.container = Some("zzz".into())))
                .await
                .unwrap_err()
        ),
        (400, "container zzz is not valid for pod web".into())
    );
    assert_eq!(
        api_err(pods.logs("nope", &lp()).await.unwrap_err()),
        (404, "pods \"nope\" not found".into())
    );
    assert_eq!(
        api_err(
            pods.logs(
                "duo",
                &with(&|p| {
                    p.container = Some("a".into());
                    p.previous = true;
                })
            )
            .await
            .unwrap_err()
        ),
        (
            400,
            "previous terminated container \"a\" in pod \"duo\" not found".into()
        )
    );
    assert_eq!(
        api_err(pods.logs("ghost", &lp()).await.unwrap_err()),
        (
            404,
            "pod \"ghost\" in namespace \"default\" does not exist".into()
        )
    );
    let (code, msg) = api_err(pods.logs("pending", &lp()).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(msg.contains("is waiting to start"), "{msg}");
    assert_eq!(
        api_err(pods.logs("lost", &lp()).await.unwrap_err()),
        (404, "nodes \"node-x\" not found".into())
    );
    assert_eq!(
        api_err(
            pods.logs("web", &with(&|p| p.tail_lines = Some(-1)))
                .await
                .unwrap_err()
        )
        .0,
        422
    );

    // ---- the real kubectl, 1.32 and 1.27 ----
    for bin in kubectl_bins() {
        let k = Kubectl {
            bin,
            kubeconfig: c.api.kubeconfig.clone(),
            cache: c.dir.path().join("kubectl-cache"),
        };
        assert_eq!(k.ok(&["logs", "web"]).await, current);
        assert_eq!(k.ok(&["logs", "pod/web", "-c", "app"]).await, current);
        assert_eq!(
            k.ok(&["logs", "web", "--previous"]).await,
            "first run\nfirst run failed\n"
        );
        assert_eq!(
            k.ok(&["logs", "web", "--tail=1"]).await,
            format!("{}\n", last_line(&current))
        );
        assert_eq!(
            k.ok(&["logs", "web", "--since=1h"]).await,
            current.strip_prefix("hello\npart-ial joined\n").unwrap()
        );
        assert_eq!(
            k.ok(&["logs", "web", "--since-time=2024-05-01T10:00:01Z"])
                .await,
            current.strip_prefix("hello\n").unwrap()
        );
        assert_eq!(k.ok(&["logs", "web", "--limit-bytes=8"]).await, "hello\npa");
        let stamped = k.ok(&["logs", "web", "--timestamps"]).await;
        assert!(
            stamped.starts_with(
                "2024-05-01T10:00:00.123456789Z hello\n2024-05-01T10:00:01Z part-ial joined\n"
            ),
            "{stamped}"
        );
        assert_eq!(k.ok(&["logs", "duo", "-c", "b"]).await, "from b\n");
        // kubectl itself defaults to the first container of several (with a notice)
        let out = k.run(&["logs", "duo"]).await;
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from a\n");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Defaulted container \"a\""),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = k.fails(&["logs", "web", "-c", "zzz"]).await;
        assert!(
            err.contains("container zzz is not valid for pod web"),
            "{err}"
        );
        let err = k.fails(&["logs", "nope"]).await;
        assert!(err.contains("pods \"nope\" not found"), "{err}");
        let err = k.fails(&["logs", "duo", "-c", "a", "--previous"]).await;
        assert!(
            err.contains("previous terminated container \"a\" in pod \"duo\" not found"),
            "{err}"
        );
        let err = k.fails(&["logs", "ghost"]).await;
        assert!(
            err.contains("(NotFound)") && err.contains("\"ghost\""),
            "{err}"
        );
        let err = k.fails(&["logs", "lost"]).await;
        assert!(err.contains("nodes \"node-x\" not found"), "{err}");

        let err = k.fails(&["logs", "pending"]).await;
        assert!(err.contains("is waiting to start"), "{err}");

        // -f for a bounded time: a line appended while following arrives live
        let mut child = tokio::process::Command::new(&k.bin)
            .args(["logs", "-f", "web", "--tail=1", "--cache-dir"])
            .arg(&k.cache)
            .env("KUBECONFIG", &k.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl logs -f");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(next_kubectl_line(&mut lines).await, last_line(&current));
        let marker = format!("live via {}", k.bin.display());
        append(&run1, &format!("{} stdout F {marker}\n", now_ts()));
        current.push_str(&format!("{marker}\n"));
        assert_eq!(next_kubectl_line(&mut lines).await, marker);
        assert!(
            child.try_wait().unwrap().is_none(),
            "kubectl -f keeps following"
        );
        assert_eq!(open_handles(&run1), 1, "the node is reading for kubectl -f");
        child.kill().await.expect("stop kubectl -f");
        // kubectl went away: the API server drops its node request and the node stops reading
        wait_closed(&run1).await;
    }

    // ---- kube-rs log_stream with follow: live lines, and the end when the container restarts ----
    let mut stream = Box::pin(
        pods.log_stream(
            "web",
            &with(&|p| {
                p.follow = true;
                p.tail_lines = Some(1);
            }),
        )
        .await
        .unwrap()
        .lines(),
    );
    assert_eq!(
        next_line(&mut stream).await.as_deref(),
        Some(last_line(&current))
    );
    append(&run1, &format!("{} stdout F followed\n", now_ts()));
    assert_eq!(next_line(&mut stream).await.as_deref(), Some("followed"));
    append(&run1, &format!("{} stdout P tor\n", now_ts()));
    append(&run1, &format!("{} stdout F n line\n", now_ts()));
    assert_eq!(next_line(&mut stream).await.as_deref(), Some("torn line"));
    // the container restarts: the stream reads the rest of this run, then ends
    append(&run1, &format!("{} stdout F goodbye\n", now_ts()));
    let run2 = c.log_path("web", &web, "app", 2);
    append(&run2, &format!("{} stdout F third run\n", now_ts()));
    assert_eq!(next_line(&mut stream).await.as_deref(), Some("goodbye"));
    assert_eq!(next_line(&mut stream).await, None);
    wait_closed(&run1).await;
    assert_eq!(pods.logs("web", &lp()).await.unwrap(), "third run\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_credentials_are_checked_both_ways() {
    let mut c = start().await;
    // a node server expecting another token: the API server's request is refused
    c.add_node("node-badtoken", None, Some("not-the-cluster-token"))
        .await;
    // a node serving a certificate the cluster CA did not sign: the API server refuses it
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    c.add_node(
        "node-foreign",
        Some((foreign.pem(), key.serialize_pem())),
        None,
    )
    .await;
    for (pod, node) in [("a", "node-badtoken"), ("b", "node-foreign")] {
        let uid = c.add_pod(pod, &["app"], Some(node)).await;
        append(
            &c.log_path(pod, &uid, "app", 0),
            &format!("{OLD1} stdout F secret\n"),
        );
    }
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let err = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    };
    let (code, msg) = err(pods.logs("a", &LogParams::default()).await.unwrap_err());
    assert_eq!(code, 500);
    assert!(msg.contains("rejected") && msg.contains("401"), "{msg}");
    let (code, msg) = err(pods.logs("b", &LogParams::default()).await.unwrap_err());
    assert_eq!(code, 500);
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}
