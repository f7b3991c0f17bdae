//! LimitRanger and ResourceQuota admission with the book's objects (chapter 14), driven by the
//! real kubectl and by concurrent kube-rs creates: container defaults from a LimitRange, limits
//! refused with upstream's words, quota `status.used` as `kubectl describe quota` shows it,
//! "exceeded quota" and "must specify" refusals, usage released when a pod goes, and concurrent
//! creates never overshooting a quota.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::server::{kubectl_bins, Backend, TestServer};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

const LIMITS: &str = r#"apiVersion: v1
kind: LimitRange
metadata:
  name: example
spec:
  limits:
  - type: Pod
    min: {cpu: 50m, memory: 5Mi}
    max: {cpu: 1, memory: 1Gi}
  - type: Container
    defaultRequest: {cpu: 100m, memory: 10Mi}
    default: {cpu: 200m, memory: 100Mi}
    min: {cpu: 50m, memory: 5Mi}
    max: {cpu: 1, memory: 1Gi}
    maxLimitRequestRatio: {cpu: 4, memory: 10}
  - type: PersistentVolumeClaim
    min: {storage: 1Gi}
    max: {storage: 10Gi}
"#;

const QUOTA: &str = r#"apiVersion: v1
kind: ResourceQuota
metadata:
  name: cpu-and-mem
spec:
  hard:
    requests.cpu: 400m
    requests.memory: 200Mi
    limits.cpu: "1"
    limits.memory: 500Mi
    pods: 10
"#;

fn pod(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: main\n    image: busybox\n{extra}"
    )
}

struct K {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl K {
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_and_quotas_as_in_the_book() {
    let server = TestServer::start(Backend::Sqlite).await;
    let k = K {
        bin: kubectl_bins().remove(0),
        kubeconfig: server.api.kubeconfig.clone(),
        cache: server.dir.path().join("cache"),
    };
    k.ok(&["create", "namespace", "limited"], "");
    let n = ["-n", "limited"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(n.iter()).map(|s| s.to_string()).collect()
    };
    let args = |v: &Vec<String>| v.clone();
    let run = |a: &[&str], stdin: &str| {
        k.ok(
            &args(&with(a))
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            stdin,
        )
    };
    let fail = |a: &[&str], stdin: &str| {
        k.fails(
            &args(&with(a))
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            stdin,
        )
    };

    // LimitRange: a pod without resources gets the defaults and is Burstable.
    run(&["apply", "-f", "-"], LIMITS);
    run(&["apply", "-f", "-"], &pod("defaulted", ""));
    let res = run(
        &[
            "get",
            "pod",
            "defaulted",
            "-o",
            "jsonpath={.spec.containers[0].resources}",
        ],
        "",
    );
    let res: serde_json::Value = serde_json::from_str(&res).unwrap();
    assert_eq!(
        res,
        json!({"limits": {"cpu": "200m", "memory": "100Mi"}, "requests": {"cpu": "100m", "memory": "10Mi"}})
    );
    assert_eq!(
        run(
            &[
                "get",
                "pod",
                "defaulted",
                "-o",
                "jsonpath={.status.qosClass}"
            ],
            ""
        ),
        "Burstable"
    );
    // Too big: refused, Forbidden, in upstream's words.
    let err = fail(
        &["apply", "-f", "-"],
        &pod(
            "too-big",
            "    resources: {limits: {cpu: 2, memory: 100Mi}, requests: {cpu: 1, memory: 100Mi}}\n",
        ),
    );
    assert!(err.contains("Forbidden"), "{err}");
    assert!(
        err.contains("maximum cpu usage per Container is 1, but limit is 2"),
        "{err}"
    );
    assert!(
        err.contains("maximum cpu usage per Pod is 1, but limit is 2"),
        "{err}"
    );
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: huge}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 20Gi}}}\n";
    let err = fail(&["apply", "-f", "-"], claim);
    assert!(
        err.contains(
            "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
        ),
        "{err}"
    );

    // ResourceQuota: usage counted, shown by describe, enforced, released.
    run(&["apply", "-f", "-"], QUOTA);
    let used = run(
        &[
            "get",
            "quota",
            "cpu-and-mem",
            "-o",
            "jsonpath={.status.used}",
        ],
        "",
    );
    let used: serde_json::Value = serde_json::from_str(&used).unwrap();
    assert_eq!(
        used["requests.cpu"], "100m",
        "the existing pod is counted: {used}"
    );
    assert_eq!(used["pods"], "1");
    for i in 1..=2 {
        run(&["apply", "-f", "-"], &pod(&format!("p{i}"), ""));
    }
    let describe = run(&["describe", "quota", "cpu-and-mem"], "");
    let row = |name: &str| -> Vec<String> {
        describe
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("limits.cpu"), ["limits.cpu", "600m", "1"], "{describe}");
    assert_eq!(
        row("requests.cpu"),
        ["requests.cpu", "300m", "400m"],
        "{describe}"
    );
    assert_eq!(row("pods"), ["pods", "3", "10"], "{describe}");
    // Two more would need 500m of requests.cpu: the second is refused.
    run(&["apply", "-f", "-"], &pod("p3", ""));
    let err = fail(&["apply", "-f", "-"], &pod("p4", ""));
    assert!(
        err.contains("exceeded quota: cpu-and-mem, requested: requests.cpu=100m, used: requests.cpu=400m, limited: requests.cpu=400m"),
        "{err}"
    );
    // Deleting a pod gives its share back.
    run(&["delete", "pod", "p3", "--grace-period=0", "--force"], "");
    let used = run(
        &[
            "get",
            "quota",
            "cpu-and-mem",
            "-o",
            "jsonpath={.status.used.requests\\.cpu}",
        ],
        "",
    );
    assert_eq!(used, "300m");
    run(&["apply", "-f", "-"], &pod("p4", ""));

    // Without a LimitRange, a quota on limits needs every container to set them.
    k.ok(&["create", "namespace", "bare"], "");
    k.ok(&["apply", "-n", "bare", "-f", "-"], QUOTA);
    let err = k.fails(&["apply", "-n", "bare", "-f", "-"], &pod("naked", ""));
    assert!(
        err.contains("failed quota: cpu-and-mem: must specify limits.cpu for: main; limits.memory for: main; requests.cpu for: main; requests.memory for: main"),
        "{err}"
    );

    // Concurrent creates never take more than the quota allows.
    k.ok(&["create", "namespace", "race"], "");
    k.ok(
        &["create", "quota", "five", "--hard=pods=5", "-n", "race"],
        "",
    );
    let pods: Api<Pod> = Api::namespaced(server.client().await, "race");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let pods = pods.clone();
            tokio::spawn(async move {
                let p: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("r{i}")},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
                .unwrap();
                pods.create(&PostParams::default(), &p).await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(kube::Error::Api(e)) => assert!(e.code == 403 || e.code == 409, "{e:?}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 5, "exactly the quota's pods were admitted");
    let used = k.ok(
        &[
            "get",
            "quota",
            "five",
            "-n",
            "race",
            "-o",
            "jsonpath={.status.used.pods}",
        ],
        "",
    );
    assert_eq!(used, "5");
}
