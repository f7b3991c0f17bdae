//! The DaemonSet controller against the real API server, with the real kubectl: three Node
//! objects get one pod each (pinned by node affinity, bound by the stand-in kubelet, which plays
//! the scheduler here); a tainted node gets none unless tolerated; a nodeSelector restricts and
//! follows relabelling; adding and deleting a node adds and removes its pod; a failed pod is
//! replaced; a template change rolls with maxUnavailable 1 (a watcher checks that never more
//! than one node is without an available pod) and `kubectl rollout status daemonset/logs`
//! returns; `rollout history` and `rollout undo` go back to the first template; OnDelete rolls
//! nothing until a pod is deleted. A second set adopts a stray pod (and deletes it as the
//! extra pod on its node), releases a relabelled one (and replaces it), and rolls with maxSurge
//! 1 / maxUnavailable 0: never a node without an available pod, never more than 4 pods.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, kubectl_bin, Cluster, K};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

const LOGS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: logs
spec:
  selector:
    matchLabels: {app: logs}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 1}
  template:
    metadata:
      labels: {app: logs}
    spec:
      containers:
      - name: c
        image: busybox:1
"#;

impl K {
    async fn apply(&self, manifest: &str) -> String {
        let mut c = Command::new(kubectl_bin());
        c.args(["apply", "-f", "-", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let manifest = manifest.to_string();
        let out = tokio::task::spawn_blocking(move || {
            let mut child = c.spawn().expect("run kubectl");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(manifest.as_bytes())
                .expect("write manifest");
            child.wait_with_output().expect("kubectl output")
        })
        .await
        .expect("join");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn image_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

async fn add_node(nodes: &Api<Node>, name: &str, labels: &[(&str, &str)], taint: Option<&str>) {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut n = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {}});
    if let Some(t) = taint {
        n["spec"]["taints"] = json!([{"key": t, "value": "yes", "effect": "NoSchedule"}]);
    }
    let n: Node = serde_json::from_value(n).expect("node");
    nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
}

/// Waits until the live (not terminating) pods labelled `app` are exactly one Ready pod on
/// each of `want` (node names), each with `image`; returns them by node.
async fn pods_on(api: &Api<Pod>, app: &str, want: &[&str], image: &str) -> HashMap<String, Pod> {
    let sel = format!("app={app}");
    eventually(
        T,
        &format!("{app} pods on {want:?} with {image}"),
        || async {
            let pods = api
                .list(&ListParams::default().labels(&sel))
                .await
                .ok()?
                .items;
            let live: Vec<Pod> = pods
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let mut nodes: Vec<String> = live.iter().map(node_of).collect();
            nodes.sort();
            (nodes == want && live.iter().all(|p| is_ready(p) && image_of(p) == image))
                .then(|| live.into_iter().map(|p| (node_of(&p), p)).collect())
        },
    )
    .await
}

async fn status_of(api: &Api<DaemonSet>, name: &str) -> serde_json::Value {
    serde_json::to_value(api.get(name).await.expect("get ds").status).expect("status json")
}

/// Waits until the DaemonSet's status has these fields.
async fn status_is(api: &Api<DaemonSet>, name: &str, want: serde_json::Value) {
    eventually(T, &format!("{name} status {want}"), || async {
        let ds = api.get(name).await.ok()?;
        let st = serde_json::to_value(ds.status.as_ref()?).ok()?;
        let ok = want
            .as_object()?
            .iter()
            .all(|(k, v)| st.get(k).unwrap_or(&json!(0)) == v);
        (ok && ds.status?.observed_generation == ds.metadata.generation).then_some(())
    })
    .await
}

/// The extremes a pod watcher saw.
#[derive(Default)]
struct Extremes {
    /// Most nodes at once without a Ready, not terminating pod.
    down: AtomicUsize,
    /// Most live (not terminating) pods at once.
    pods: AtomicUsize,
}

/// Watches the pods of `app` and records [`Extremes`] over `nodes`.
fn watch_unavailable(
    client: kube::Client,
    app: &str,
    nodes: &[&str],
) -> (Arc<Extremes>, tokio::task::JoinHandle<()>) {
    let worst = Arc::new(Extremes::default());
    let w = worst.clone();
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let h = tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut pods: HashMap<String, Pod> = HashMap::new();
        let mut listed = false;
        let s = watcher(api, cfg).default_backoff();
        futures::pin_mut!(s);
        while let Some(Ok(ev)) = s.next().await {
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    pods.insert(p.uid().unwrap_or_default(), p);
                }
                watcher::Event::Delete(p) => {
                    pods.remove(&p.uid().unwrap_or_default());
                }
                watcher::Event::Init => pods.clear(),
                watcher::Event::InitDone => listed = true,
            }
            // Count only whole states, not a half-delivered initial list.
            if !listed {
                continue;
            }
            let down = nodes
                .iter()
                .filter(|n| {
                    !pods.values().any(|p| {
                        &node_of(p) == *n && is_ready(p) && p.metadata.deletion_timestamp.is_none()
                    })
                })
                .count();
            w.down.fetch_max(down, Ordering::SeqCst);
            let live = pods
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            w.pods.fetch_max(live, Ordering::SeqCst);
        }
    });
    (worst, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_places_rolls_and_undoes_with_kubectl() {
    let c = Cluster::start().await;
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().expect("cache dir"),
    };
    let nodes: Api<Node> = Api::all(c.client.clone());
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    let revs: Api<ControllerRevision> = Api::namespaced(c.client.clone(), "default");
    add_node(&nodes, "n1", &[("disk", "ssd")], None).await;
    add_node(&nodes, "n2", &[("disk", "ssd")], None).await;
    add_node(&nodes, "n3", &[("disk", "hdd")], None).await;
    add_node(&nodes, "tainted", &[("disk", "ssd")], Some("dedicated")).await;

    // One pod per untainted node, pinned by node affinity and bound there.
    k.apply(LOGS).await;
    let first = pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:1").await;
    let p1 = &first["n1"];
    let terms = &p1
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("node affinity")
        .node_selector_terms;
    assert_eq!(
        serde_json::to_value(terms).expect("terms"),
        json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
    );
    let tolerations = p1
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable")),
        "{tolerations:?}"
    );
    let owner = &p1.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("DaemonSet", Some(true))
    );
    let hash1 = p1.labels()["controller-revision-hash"].clone();
    status_is(
        &sets,
        "logs",
        json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 3,
               "numberAvailable": 3, "updatedNumberScheduled": 3, "numberMisscheduled": 0,
               "numberUnavailable": 0}),
    )
    .await;
    let get = k.ok(&["get", "ds", "logs"]).await;
    assert!(get.lines().nth(1).is_some_and(|l| l.contains('3')), "{get}");

    // A DaemonSet tolerating the taint and selecting ssd nodes: n1, n2 and the tainted node.
    k.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: ssd
spec:
  selector:
    matchLabels: {app: ssd}
  template:
    metadata:
      labels: {app: ssd}
    spec:
      nodeSelector: {disk: ssd}
      tolerations:
      - {key: dedicated, operator: Exists, effect: NoSchedule}
      containers:
      - name: c
        image: busybox:1
"#,
    )
    .await;
    pods_on(&pods, "ssd", &["n1", "n2", "tainted"], "busybox:1").await;
    // Relabelling: n2 leaves the selector, n3 joins it.
    let relabel = |disk: &'static str| json!({"metadata": {"labels": {"disk": disk}}});
    nodes
        .patch(
            "n2",
            &PatchParams::default(),
            &Patch::Merge(&relabel("hdd")),
        )
        .await
        .expect("relabel n2");
    nodes
        .patch(
            "n3",
            &PatchParams::default(),
            &Patch::Merge(&relabel("ssd")),
        )
        .await
        .expect("relabel n3");
    pods_on(&pods, "ssd", &["n1", "n3", "tainted"], "busybox:1").await;
    // A new node gets a pod of each set; deleting it removes them.
    add_node(&nodes, "n4", &[("disk", "ssd")], None).await;
    pods_on(&pods, "ssd", &["n1", "n3", "n4", "tainted"], "busybox:1").await;
    pods_on(&pods, "logs", &["n1", "n2", "n3", "n4"], "busybox:1").await;
    nodes
        .delete("n4", &DeleteParams::default())
        .await
        .expect("delete n4");
    pods_on(&pods, "ssd", &["n1", "n3", "tainted"], "busybox:1").await;
    pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:1").await;
    sets.delete("ssd", &DeleteParams::default())
        .await
        .expect("delete ssd");

    // The tainted node never got a logs pod.
    let st = status_of(&sets, "logs").await;
    assert_eq!(st["desiredNumberScheduled"], 3, "{st}");

    // A failed pod is deleted and replaced on its node.
    let failed = pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:1").await["n2"].clone();
    pods.patch_status(
        &failed.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
    )
    .await
    .expect("fail pod");
    eventually(T, "failed pod replaced", || async {
        let now = pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:1").await;
        (now["n2"].uid() != failed.uid()).then_some(())
    })
    .await;
    status_is(&sets, "logs", json!({"numberAvailable": 3})).await;

    // A rolling update, never more than one node without an available pod.
    let (worst, watch) = watch_unavailable(c.client.clone(), "logs", &["n1", "n2", "n3"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&["set", "image", "daemonset/logs", "c=busybox:2"])
        .await;
    let out = k
        .ok(&["rollout", "status", "daemonset/logs", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let second = pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:2").await;
    let hash2 = second["n1"].labels()["controller-revision-hash"].clone();
    assert_ne!(hash1, hash2);
    watch.abort();
    assert_eq!(
        worst.down.load(Ordering::SeqCst),
        1,
        "a rollout with maxUnavailable 1 had more (or fewer) nodes down"
    );
    assert_eq!(
        worst.pods.load(Ordering::SeqCst),
        3,
        "no surge without maxSurge"
    );

    // Two revisions; history lists both; undo goes back to the first template.
    let list = revs
        .list(&ListParams::default())
        .await
        .expect("revisions")
        .items;
    let mut numbered: Vec<(i64, String)> =
        list.iter().map(|r| (r.revision, r.name_any())).collect();
    numbered.sort();
    assert_eq!(
        numbered,
        vec![(1, format!("logs-{hash1}")), (2, format!("logs-{hash2}"))]
    );
    let history = k.ok(&["rollout", "history", "daemonset/logs"]).await;
    assert!(
        history.lines().any(|l| l.starts_with("1 "))
            && history.lines().any(|l| l.starts_with("2 ")),
        "{history}"
    );
    let shown = k
        .ok(&["rollout", "history", "daemonset/logs", "--revision=1"])
        .await;
    assert!(shown.contains("busybox:1"), "{shown}");
    k.ok(&["rollout", "undo", "daemonset/logs"]).await;
    let out = k
        .ok(&["rollout", "status", "daemonset/logs", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let back = pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:1").await;
    assert!(back
        .values()
        .all(|p| p.labels()["controller-revision-hash"] == hash1));
    let r1 = revs.get(&format!("logs-{hash1}")).await.expect("rev 1");
    assert_eq!(r1.revision, 3, "the first template is renumbered");

    // OnDelete: a template change rolls nothing until a pod is deleted.
    sets.patch(
        "logs",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}),
        ),
    )
    .await
    .expect("OnDelete");
    k.ok(&["set", "image", "daemonset/logs", "c=busybox:3"])
        .await;
    status_is(
        &sets,
        "logs",
        json!({"updatedNumberScheduled": 0, "numberAvailable": 3}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = pods_on(&pods, "logs", &["n1", "n2", "n3"], "busybox:1").await;
    pods.delete(&still["n3"].name_any(), &DeleteParams::default())
        .await
        .expect("delete n3 pod");
    eventually(T, "n3 recreated at the new template", || async {
        let list = pods
            .list(&ListParams::default().labels("app=logs"))
            .await
            .ok()?
            .items;
        let live: Vec<&Pod> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        let img: BTreeMap<String, String> =
            live.iter().map(|p| (node_of(p), image_of(p))).collect();
        let want: BTreeMap<String, String> = [
            ("n1", "busybox:1"),
            ("n2", "busybox:1"),
            ("n3", "busybox:3"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        (live.len() == 3 && img == want).then_some(())
    })
    .await;
    status_is(
        &sets,
        "logs",
        json!({"updatedNumberScheduled": 1, "numberAvailable": 3}),
    )
    .await;
    let out = kubectl_out(&k, &["rollout", "status", "daemonset/logs"]).await;
    assert!(out.contains("only available for RollingUpdate"), "{out}");
}

/// kubectl's combined output, success or not.
async fn kubectl_out(k: &K, args: &[&str]) -> String {
    let out = common::kubectl(&k.kubeconfig, k.cache.path(), args).await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_adopts_releases_and_surges() {
    let c = Cluster::start().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    for n in ["n1", "n2", "n3"] {
        add_node(&nodes, n, &[], None).await;
    }
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
    }))
    .expect("ds");
    sets.create(&PostParams::default(), &ds)
        .await
        .expect("create ds");
    let placed = pods_on(&pods, "agent", &["n1", "n2", "n3"], "busybox:1").await;

    // A stray pod on n1 matching the selector is adopted and, as n1's second pod, deleted.
    let stray: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "labels": {"app": "agent"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox:1"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &stray)
        .await
        .expect("create stray");
    eventually(T, "stray pod deleted", || async {
        pods.get_opt("stray").await.ok()?.is_none().then_some(())
    })
    .await;
    let now = pods_on(&pods, "agent", &["n1", "n2", "n3"], "busybox:1").await;
    assert_eq!(now["n1"].uid(), placed["n1"].uid(), "the oldest pod stays");

    // A pod relabelled out of the selector is released and replaced.
    let n2 = placed["n2"].name_any();
    pods.patch(
        &n2,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .expect("relabel pod");
    eventually(T, "relabelled pod released", || async {
        let p = pods.get(&n2).await.ok()?;
        p.owner_references().is_empty().then_some(())
    })
    .await;
    let now = pods_on(&pods, "agent", &["n1", "n2", "n3"], "busybox:1").await;
    assert_ne!(now["n2"].name_any(), n2);
    status_is(
        &sets,
        "agent",
        json!({"desiredNumberScheduled": 3, "numberAvailable": 3}),
    )
    .await;

    // Surge: the new pod comes first, the old goes once the new one is available.
    let (worst, watch) = watch_unavailable(c.client.clone(), "agent", &["n1", "n2", "n3"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sets.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "busybox:2"}]}}}})),
    )
    .await
    .expect("set image");
    pods_on(&pods, "agent", &["n1", "n2", "n3"], "busybox:2").await;
    status_is(
        &sets,
        "agent",
        json!({"updatedNumberScheduled": 3, "numberAvailable": 3, "numberUnavailable": 0}),
    )
    .await;
    watch.abort();
    assert_eq!(
        worst.down.load(Ordering::SeqCst),
        0,
        "a node went without an available pod"
    );
    assert_eq!(
        worst.pods.load(Ordering::SeqCst),
        4,
        "maxSurge 1 allows one extra pod"
    );
}
