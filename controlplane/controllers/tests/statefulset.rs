//! The StatefulSet controller against the real API server, with the real kubectl: the book's
//! kubia StatefulSet (chapter 10) is created in order (kubia-1 only once kubia-0 is Ready), gets
//! stable hostnames and its claims, scales up and down from the highest ordinal keeping the
//! claims, recreates deleted and failed pods under the same name, rolls a template change from
//! the highest ordinal down respecting a partition; `kubectl get sts`, `kubectl rollout
//! status|history|undo`.
//! Without the stand-in kubelet (pods never become Ready): Parallel creates all pods at once and
//! scales down without waiting (`whenScaled: Delete` removing the claims), OrderedReady creates
//! one and waits.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, kubectl_bin, Cluster, K};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

const KUBIA: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: kubia
spec:
  clusterIP: None
  selector:
    app: kubia
  ports:
  - name: http
    port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: kubia
spec:
  serviceName: kubia
  replicas: 2
  selector:
    matchLabels:
      app: kubia
  template:
    metadata:
      labels:
        app: kubia
    spec:
      containers:
      - name: kubia
        image: luksa/kubia-pet
        ports:
        - name: http
          containerPort: 8080
        volumeMounts:
        - name: data
          mountPath: /var/data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      resources:
        requests:
          storage: 1Mi
      accessModes:
      - ReadWriteOnce
"#;

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn revision(p: &Pod) -> String {
    p.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

/// Records, in order, `add NAME`, `ready NAME`, `terminating NAME` and `gone NAME` for every
/// pod incarnation (by uid) in `default`.
fn record(client: kube::Client) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let h = tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut seen: HashMap<String, (bool, bool)> = HashMap::new();
        let s = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(s);
        while let Some(Ok(ev)) = s.next().await {
            let push = |e: String| l.lock().unwrap().push(e);
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let uid = p.uid().unwrap_or_default();
                    let name = p.name_any();
                    let st = seen.entry(uid).or_insert_with(|| {
                        push(format!("add {name}"));
                        (false, false)
                    });
                    if is_ready(&p) && !st.0 {
                        st.0 = true;
                        push(format!("ready {name}"));
                    }
                    if p.metadata.deletion_timestamp.is_some() && !st.1 {
                        st.1 = true;
                        push(format!("terminating {name}"));
                    }
                }
                watcher::Event::Delete(p) => push(format!("gone {}", p.name_any())),
                _ => {}
            }
        }
    });
    (log, h)
}

fn pos(log: &[String], e: &str) -> usize {
    log.iter()
        .position(|x| x == e)
        .unwrap_or_else(|| panic!("{e:?} not in {log:#?}"))
}

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
                .unwrap()
                .write_all(manifest.as_bytes())
                .unwrap();
            child.wait_with_output().expect("kubectl output")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Waits until exactly the pods `names` of `app` exist, all Ready and not terminating.
async fn ready_pods(api: &Api<Pod>, app: &str, names: &[&str]) -> Vec<Pod> {
    let sel = format!("app={app}");
    eventually(T, &format!("pods {names:?} ready"), || async {
        let mut pods = api
            .list(&ListParams::default().labels(&sel))
            .await
            .ok()?
            .items;
        pods.sort_by_key(|p| p.name_any());
        let got: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        (got == names
            && pods
                .iter()
                .all(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()))
        .then_some(pods)
    })
    .await
}

async fn status_of(sets: &Api<StatefulSet>, name: &str) -> serde_json::Value {
    serde_json::to_value(sets.get(name).await.unwrap().status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubia_statefulset_with_kubectl() {
    let c = Cluster::start().await;
    let (log, watch) = record(c.client.clone());
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().unwrap(),
    };
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    let revs: Api<ControllerRevision> = Api::namespaced(c.client.clone(), "default");

    k.apply(KUBIA).await;
    let two = ready_pods(&pods, "kubia", &["kubia-0", "kubia-1"]).await;
    {
        let log = log.lock().unwrap().clone();
        // kubia-1 is created only once kubia-0 is Ready.
        assert!(
            pos(&log, "ready kubia-0") < pos(&log, "add kubia-1"),
            "{log:#?}"
        );
    }
    let rev1 = revision(&two[0]);
    assert!(rev1.starts_with("kubia-"), "{rev1}");
    for (i, p) in two.iter().enumerate() {
        let name = format!("kubia-{i}");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("kubia"));
        let l = p.labels();
        assert_eq!(l["statefulset.kubernetes.io/pod-name"], name);
        assert_eq!(l["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(revision(p), rev1);
        let owner = &p.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("StatefulSet", "kubia")
        );
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .expect("data volume");
        assert_eq!(
            vol.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("data-{name}")
        );
        let pvc = pvcs.get(&format!("data-{name}")).await.expect("claim");
        assert_eq!(pvc.labels()["app"], "kubia");
    }
    let claim_uid = pvcs.get("data-kubia-1").await.unwrap().uid();

    // kubectl sees the set as upstream's.
    let out = k.ok(&["get", "sts", "kubia"]).await;
    assert!(out.contains("READY") && out.contains("2/2"), "{out}");
    let out = k
        .ok(&["rollout", "status", "sts", "kubia", "--timeout=60s"])
        .await;
    // The API server defaults `partition: 0`, so kubectl reports a partitioned rollout, as
    // against Kubernetes.
    assert!(
        out.contains("partitioned roll out complete: 2 new pods"),
        "{out}"
    );
    let st = status_of(&sets, "kubia").await;
    assert_eq!(st["currentRevision"], rev1.as_str());
    assert_eq!(st["updateRevision"], rev1.as_str());
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["readyReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );

    // Scale up, then down to 1: kubia-2 goes before kubia-1, the claims stay.
    k.ok(&["scale", "sts", "kubia", "--replicas=3"]).await;
    ready_pods(&pods, "kubia", &["kubia-0", "kubia-1", "kubia-2"]).await;
    k.ok(&["scale", "sts", "kubia", "--replicas=1"]).await;
    ready_pods(&pods, "kubia", &["kubia-0"]).await;
    {
        let log = log.lock().unwrap().clone();
        assert!(
            pos(&log, "gone kubia-2") < pos(&log, "terminating kubia-1"),
            "{log:#?}"
        );
    }
    for n in ["data-kubia-0", "data-kubia-1", "data-kubia-2"] {
        assert!(pvcs.get_opt(n).await.unwrap().is_some(), "{n} kept");
    }
    // Back to 3: kubia-1 reuses its claim.
    k.ok(&["scale", "sts", "kubia", "--replicas=3"]).await;
    ready_pods(&pods, "kubia", &["kubia-0", "kubia-1", "kubia-2"]).await;
    assert_eq!(pvcs.get("data-kubia-1").await.unwrap().uid(), claim_uid);

    // A deleted pod comes back with its name (a new incarnation).
    let old_uid = pods.get("kubia-1").await.unwrap().uid();
    // `--wait=false`: the stand-in kubelet ends the pod at once and the controller recreates it
    // within milliseconds, so kubectl's wait (GET, then a list that already shows the new pod,
    // then a watch for a DELETED that happened before it) could wait forever, as it would
    // against Kubernetes with a pod that terminates that fast.
    k.ok(&["delete", "pod", "kubia-1", "--wait=false"]).await;
    let back = eventually(T, "kubia-1 back", || async {
        let p = pods.get_opt("kubia-1").await.ok()??;
        (p.uid() != old_uid && is_ready(&p)).then_some(p)
    })
    .await;
    assert_eq!(
        back.spec.as_ref().unwrap().hostname.as_deref(),
        Some("kubia-1")
    );

    // A Failed pod is deleted and recreated.
    let old_uid = pods.get("kubia-0").await.unwrap().uid();
    pods.patch_status(
        "kubia-0",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    eventually(T, "kubia-0 recreated", || async {
        let p = pods.get_opt("kubia-0").await.ok()??;
        (p.uid() != old_uid && is_ready(&p)).then_some(())
    })
    .await;
    ready_pods(&pods, "kubia", &["kubia-0", "kubia-1", "kubia-2"]).await;

    // A template change with partition 2: only kubia-2 is replaced.
    log.lock().unwrap().clear();
    k.ok(&[
        "patch",
        "sts",
        "kubia",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ])
    .await;
    k.ok(&["set", "image", "sts/kubia", "kubia=luksa/kubia-pet:v2"])
        .await;
    let rev2 = eventually(T, "partitioned rollout", || async {
        let st = status_of(&sets, "kubia").await;
        let upd = st["updateRevision"].as_str()?.to_string();
        (upd != rev1 && st["updatedReplicas"] == 1 && st["readyReplicas"] == 3).then_some(upd)
    })
    .await;
    let out = k
        .ok(&["rollout", "status", "sts", "kubia", "--timeout=60s"])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 1 new pods"),
        "{out}"
    );
    let now = ready_pods(&pods, "kubia", &["kubia-0", "kubia-1", "kubia-2"]).await;
    let revs_now: Vec<String> = now.iter().map(revision).collect();
    assert_eq!(revs_now, [rev1.clone(), rev1.clone(), rev2.clone()]);
    assert_eq!(
        status_of(&sets, "kubia").await["currentRevision"],
        rev1.as_str()
    );

    // Partition 0: kubia-1 then kubia-0, each after the previous replacement is Ready.
    k.ok(&[
        "patch",
        "sts",
        "kubia",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ])
    .await;
    let out = k
        .ok(&["rollout", "status", "sts", "kubia", "--timeout=60s"])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 3 new pods"),
        "{out}"
    );
    let now = ready_pods(&pods, "kubia", &["kubia-0", "kubia-1", "kubia-2"]).await;
    assert!(now.iter().all(|p| revision(p) == rev2));
    {
        let log = log.lock().unwrap().clone();
        let t2 = pos(&log, "terminating kubia-2");
        let t1 = pos(&log, "terminating kubia-1");
        let t0 = pos(&log, "terminating kubia-0");
        assert!(t2 < t1 && t1 < t0, "{log:#?}");
        // Each replacement is Ready before the next pod goes.
        let ready_after = |t: usize, name: &str| {
            log[t..]
                .iter()
                .position(|e| e == &format!("ready {name}"))
                .map(|i| i + t)
        };
        assert!(ready_after(t2, "kubia-2").unwrap() < t1, "{log:#?}");
        assert!(ready_after(t1, "kubia-1").unwrap() < t0, "{log:#?}");
    }
    let st = status_of(&sets, "kubia").await;
    assert_eq!(st["currentRevision"], rev2.as_str());
    assert_eq!(st["updatedReplicas"], 3);

    // History: both revisions, owned by the set, numbered in order.
    let mut rs: Vec<ControllerRevision> = revs.list(&ListParams::default()).await.unwrap().items;
    rs.sort_by_key(|r| r.revision);
    let names: Vec<String> = rs.iter().map(|r| r.name_any()).collect();
    assert_eq!(names, [rev1.clone(), rev2.clone()]);
    assert_eq!(rs[1].revision, 2);
    let out = k.ok(&["rollout", "history", "sts", "kubia"]).await;
    assert!(out.contains('1') && out.contains('2'), "{out}");
    let out = k.ok(&["get", "sts", "kubia"]).await;
    assert!(out.contains("3/3"), "{out}");

    // `rollout undo` brings revision 1's template back: its revision becomes number 3.
    k.ok(&["rollout", "undo", "sts", "kubia"]).await;
    let out = k
        .ok(&["rollout", "status", "sts", "kubia", "--timeout=60s"])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 3 new pods"),
        "{out}"
    );
    let now = ready_pods(&pods, "kubia", &["kubia-0", "kubia-1", "kubia-2"]).await;
    assert!(now.iter().all(|p| revision(p) == rev1), "back at {rev1}");
    let undone = revs.get(&rev1).await.unwrap();
    assert_eq!(undone.revision, 3);
    watch.abort();
}

const PAR: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: par
spec:
  serviceName: par
  replicas: 3
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete}
  selector:
    matchLabels: {app: par}
  template:
    metadata:
      labels: {app: par}
    spec:
      containers:
      - name: c
        image: busybox:1
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Mi}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ord
spec:
  serviceName: ord
  replicas: 3
  selector:
    matchLabels: {app: ord}
  template:
    metadata:
      labels: {app: ord}
    spec:
      containers:
      - name: c
        image: busybox:1
"#;

/// No stand-in kubelet here: pods stay Pending, so what exists is what the policy created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_all_ordered_waits() {
    let kennel_apiserver::testing::TestApiServer {
        api,
        dir: _dir,
        client,
    } = kennel_apiserver::testing::TestApiServer::start().await;
    let controllers = tokio::spawn(kennel_controllers::run(
        kennel_controllers::ControllerConfig {
            identity: "sts-test".into(),
            leader_elect: false,
            root_ca_pem: None,
        },
        client.clone(),
    ));
    let k = K {
        kubeconfig: api.kubeconfig.clone(),
        cache: tempfile::tempdir().unwrap(),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    k.apply(PAR).await;
    let names = |app: &'static str| {
        let pods = pods.clone();
        async move {
            let mut v: Vec<String> = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            v.sort();
            v
        }
    };
    // Parallel: all three while none is Ready.
    eventually(T, "par pods", || async {
        (names("par").await == ["par-0", "par-1", "par-2"]).then_some(())
    })
    .await;
    // OrderedReady: ord-0 only; ord-1 once ord-0 is Running and Ready.
    eventually(T, "ord-0", || async {
        (names("ord").await == ["ord-0"]).then_some(())
    })
    .await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    eventually(T, "ord status", || async {
        let st = status_of(&sets, "ord").await;
        (st["replicas"] == 1 && st["observedGeneration"].as_i64().is_some()).then_some(())
    })
    .await;
    assert_eq!(names("ord").await, ["ord-0"]);
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    pods.patch_status(
        "ord-0",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}})),
    )
    .await
    .unwrap();
    eventually(T, "ord-1", || async {
        (names("ord").await == ["ord-0", "ord-1"]).then_some(())
    })
    .await;

    // Parallel scale-down deletes without waiting; `whenScaled: Delete` removes the claims of
    // the removed ordinals once their pods are gone, `data-par-0` stays.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    for n in ["data-par-0", "data-par-1", "data-par-2"] {
        assert!(claims.get_opt(n).await.unwrap().is_some(), "{n} created");
    }
    k.ok(&["scale", "sts", "par", "--replicas=1"]).await;
    eventually(T, "par scaled down", || async {
        (names("par").await == ["par-0"]).then_some(())
    })
    .await;
    eventually(T, "scaled claims deleted", || async {
        let mut v: Vec<String> = claims
            .list(&ListParams::default().labels("app=par"))
            .await
            .ok()?
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .collect();
        v.sort();
        (v == ["data-par-0"]).then_some(())
    })
    .await;
    controllers.abort();
}
