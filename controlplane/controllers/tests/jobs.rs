//! Jobs, CronJobs and the TTL-after-finished controller against the real in-process API server,
//! with the stand-in kubelet ending pods as their `kennel.test/exit` annotation (or `exit N`
//! command) says: parallelism and completions, Indexed completion, the backoff limit with its
//! 10 s back-off, `activeDeadlineSeconds`, suspend/resume, a FailJob pod failure policy,
//! `ttlSecondsAfterFinished`; CronJobs on an injected clock (Allow, Forbid, Replace, history
//! limits); and the real kubectl (`create job`, `create cronjob`, `create job --from`, `wait`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{eventually, kubelet, Cluster, K};
use futures::FutureExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kennel_apiserver::testing::TestApiServer;
use kennel_controllers::{cronjob, job, ttl, Ctx};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn job_manifest(name: &str, spec: Value, exit: Option<&str>) -> Job {
    let mut spec = spec;
    let annotations = exit.map_or(json!({}), |e| json!({ kubelet::EXIT: e }));
    spec["template"] = json!({
        "metadata": {"labels": {"app": name}, "annotations": annotations},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox:1"}]},
    });
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("job")
}

async fn create_job(c: &Client, job: &Job) -> Job {
    let api: Api<Job> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), job)
        .await
        .expect("create job")
}

/// The pods of the Job named `name`, by its job-name label.
async fn pods_of(c: &Client, name: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(c.clone(), "default");
    api.list(&ListParams::default().labels(&format!("{}={name}", job::pods::JOB_NAME)))
        .await
        .expect("list pods")
        .items
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn running(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| {
            !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
        })
        .count()
}

/// The reason of the Job's True condition `type_`, once it has one.
async fn wait_condition(c: &Client, name: &str, type_: &str, timeout: Duration) -> (Job, String) {
    let api: Api<Job> = Api::namespaced(c.clone(), "default");
    eventually(timeout, &format!("job {name} {type_}"), || {
        let api = api.clone();
        async move {
            let j = api.get(name).await.ok()?;
            let reason = j
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")?
                .reason
                .clone()
                .unwrap_or_default();
            Some((j, reason))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_parallelism() {
    let c = Cluster::start().await;
    let j = create_job(
        &c.client,
        &job_manifest(
            "par",
            json!({"completions": 3, "parallelism": 2}),
            Some("1200:0"),
        ),
    )
    .await;
    let uid = j.uid().expect("uid");
    let max_running = Arc::new(AtomicI64::new(0));
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let done = eventually(T, "job par complete", || {
        let (client, api, max) = (c.client.clone(), api.clone(), max_running.clone());
        async move {
            let pods = pods_of(&client, "par").await;
            max.fetch_max(running(&pods) as i64, Ordering::SeqCst);
            let j = api.get("par").await.ok()?;
            let st = j.status.clone()?;
            st.conditions?
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
                .then_some((j, pods))
        }
    })
    .await;
    let (j, pods) = done;
    assert_eq!(
        max_running.load(Ordering::SeqCst),
        2,
        "never more than parallelism pods run"
    );
    let st = j.status.expect("status");
    assert_eq!(st.succeeded, Some(3));
    assert!(st.active.is_none());
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    let conds = st.conditions.expect("conditions");
    assert!(conds
        .iter()
        .any(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True"));
    assert_eq!(pods.len(), 3, "one pod per completion, none extra");
    for p in &pods {
        let l = p.labels();
        assert_eq!(l[job::pods::CONTROLLER_UID], uid);
        assert_eq!(l["controller-uid"], uid);
        assert_eq!(l["job-name"], "par");
        assert_eq!(l["app"], "par");
        assert!(p.name_any().starts_with("par-") && p.name_any().len() == "par-".len() + 5);
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.controller, r.block_owner_deletion),
            ("Job", Some(true), Some(true))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job() {
    let c = Cluster::start().await;
    create_job(
        &c.client,
        &job_manifest(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            Some("300:0"),
        ),
    )
    .await;
    let (j, _) = wait_condition(&c.client, "idx", "Complete", T).await;
    let st = j.status.expect("status");
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(st.succeeded, Some(3));
    let pods = pods_of(&c.client, "idx").await;
    let mut seen = BTreeSet::new();
    for p in &pods {
        let i: i32 = p.annotations()[job::pods::COMPLETION_INDEX]
            .parse()
            .expect("index");
        assert_eq!(p.labels()[job::pods::COMPLETION_INDEX], i.to_string());
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        assert!(p.name_any().starts_with(&format!("idx-{i}-")));
        let env = spec.containers[0].env.as_ref().expect("env");
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        seen.insert(i);
    }
    assert_eq!(seen, BTreeSet::from([0, 1, 2]));
    assert_eq!(pods.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_limit_exceeded() {
    let c = Cluster::start().await;
    create_job(
        &c.client,
        &job_manifest("flaky", json!({"backoffLimit": 1}), Some("200:1")),
    )
    .await;
    let (j, reason) = wait_condition(&c.client, "flaky", "Failed", Duration::from_secs(45)).await;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(j.status.as_ref().and_then(|s| s.failed), Some(2));
    let mut pods = pods_of(&c.client, "flaky").await;
    assert_eq!(pods.len(), 2, "the limit stops re-creation");
    pods.sort_by_key(|p| p.creation_timestamp().map(|t| t.0));
    let first_end = pods[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs[0]
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0.as_second())
        });
    let second_start = pods[1].creation_timestamp().map(|t| t.0.as_second());
    let (Some(end), Some(start)) = (first_end, second_start) else {
        panic!("timestamps");
    };
    assert!(
        start - end >= 9,
        "re-created after the 10 s back-off ({end} -> {start})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline() {
    let c = Cluster::start().await;
    create_job(
        &c.client,
        &job_manifest("slow", json!({"activeDeadlineSeconds": 2}), None),
    )
    .await;
    let (j, reason) = wait_condition(&c.client, "slow", "Failed", T).await;
    assert_eq!(reason, "DeadlineExceeded");
    assert!(j
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .is_none());
    eventually(T, "active pods deleted", || {
        let client = c.client.clone();
        async move { (running(&pods_of(&client, "slow").await) == 0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume() {
    let c = Cluster::start().await;
    create_job(
        &c.client,
        &job_manifest("sus", json!({"completions": 2, "parallelism": 2}), None),
    )
    .await;
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    eventually(T, "two pods run", || {
        let client = c.client.clone();
        async move { (running(&pods_of(&client, "sus").await) == 2).then_some(()) }
    })
    .await;
    let started = api
        .get("sus")
        .await
        .expect("get")
        .status
        .and_then(|s| s.start_time)
        .expect("startTime");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pp = PatchParams::default();
    api.patch(
        "sus",
        &pp,
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("suspend");
    let (j, reason) = wait_condition(&c.client, "sus", "Suspended", T).await;
    assert_eq!(reason, "JobSuspended");
    eventually(T, "pods deleted while suspended", || {
        let client = c.client.clone();
        async move { pods_of(&client, "sus").await.is_empty().then_some(()) }
    })
    .await;
    assert!(
        j.status.as_ref().and_then(|s| s.failed).is_none(),
        "suspension is no failure"
    );
    api.patch(
        "sus",
        &pp,
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    let resumed = eventually(T, "resumed", || {
        let (api, client) = (api.clone(), c.client.clone());
        async move {
            let j = api.get("sus").await.ok()?;
            let st = j.status?;
            let suspended = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Suspended")?;
            (suspended.status == "False" && running(&pods_of(&client, "sus").await) == 2)
                .then_some(st.start_time?)
        }
    })
    .await;
    assert!(resumed.0 > started.0, "resuming resets startTime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policy_fails_job() {
    let c = Cluster::start().await;
    let spec = json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    ]}});
    create_job(&c.client, &job_manifest("pfp", spec, Some("200:42"))).await;
    let (j, reason) = wait_condition(&c.client, "pfp", "Failed", Duration::from_secs(8)).await;
    assert_eq!(reason, "PodFailurePolicy");
    let conds = j.status.and_then(|s| s.conditions).expect("conditions");
    let msg = conds
        .iter()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("exit code 42"), "{msg}");
    assert_eq!(
        pods_of(&c.client, "pfp").await.len(),
        1,
        "no retry after FailJob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_after_finished_deletes_job() {
    let c = Cluster::start().await;
    create_job(
        &c.client,
        &job_manifest(
            "short",
            json!({"ttlSecondsAfterFinished": 1}),
            Some("100:0"),
        ),
    )
    .await;
    wait_condition(&c.client, "short", "Complete", T).await;
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    eventually(T, "job deleted after its ttl", || {
        let api = api.clone();
        async move { api.get_opt("short").await.ok()?.is_none().then_some(()) }
    })
    .await;
    eventually(T, "its pods deleted", || {
        let client = c.client.clone();
        async move { pods_of(&client, "short").await.is_empty().then_some(()) }
    })
    .await;
}

/// API server, stand-in kubelet, and the Job and CronJob controllers with a clock `offset`
/// seconds ahead of the real one.
struct Shifted {
    _api: TestApiServer,
    client: Client,
    offset: Arc<AtomicI64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Shifted {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Shifted {
    async fn start() -> Self {
        let api = TestApiServer::start().await;
        let client = api.client.clone();
        let ctx = Arc::new(Ctx::new(client.clone()));
        let offset = Arc::new(AtomicI64::new(0));
        let o = offset.clone();
        let clock: cronjob::Clock =
            Arc::new(move || Utc::now() + chrono::Duration::seconds(o.load(Ordering::SeqCst)));
        let parts = vec![
            job::controller(ctx.clone()).boxed(),
            cronjob::controller_with_clock(ctx.clone(), clock).boxed(),
            ttl::controller(ctx.clone()).boxed(),
        ];
        let informers = {
            let ctx = ctx.clone();
            async move { ctx.run_informers().await }
        };
        let tasks = vec![
            tokio::spawn(async move {
                futures::future::join(futures::future::join_all(parts), informers).await;
            }),
            tokio::spawn(kubelet::run(client.clone())),
        ];
        Self {
            _api: api,
            client,
            offset,
            tasks,
        }
    }

    /// Moves the controller's clock to 2 s past the next minute boundary (of its own now).
    fn next_minute(&self) -> DateTime<Utc> {
        self.past_next_minute(2)
    }

    /// Moves the controller's clock to `secs` past the next minute boundary; that boundary.
    fn past_next_minute(&self, secs: i64) -> DateTime<Utc> {
        let now = Utc::now() + chrono::Duration::seconds(self.offset.load(Ordering::SeqCst));
        let next = (now.timestamp() / 60 + 1) * 60;
        self.offset
            .fetch_add(next + secs - now.timestamp(), Ordering::SeqCst);
        DateTime::from_timestamp(next, 0).expect("time")
    }

    /// Wakes the CronJob's controller (an annotation change).
    async fn poke(&self, name: &str) {
        let api: Api<CronJob> = Api::namespaced(self.client.clone(), "default");
        let v = self.offset.load(Ordering::SeqCst).to_string();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poke": v}}})),
        )
        .await
        .expect("poke");
    }

    async fn jobs(&self) -> Vec<Job> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), "default");
        let mut v = api.list(&ListParams::default()).await.expect("list").items;
        v.retain(|j| j.metadata.deletion_timestamp.is_none());
        v.sort_by_key(|j| j.name_any());
        v
    }

    /// Advances to the next schedule time and waits until `want` Jobs exist.
    async fn tick(&self, cj: &str, want: usize) -> (DateTime<Utc>, Vec<Job>) {
        let at = self.next_minute();
        self.poke(cj).await;
        let jobs = eventually(T, &format!("{want} jobs"), || async move {
            let jobs = self.jobs().await;
            (jobs.len() == want
                && jobs
                    .iter()
                    .any(|j| j.name_any() == cronjob::schedule::job_name(cj, at)))
            .then_some(jobs)
        })
        .await;
        (at, jobs)
    }
}

fn cron_manifest(name: &str, policy: &str, exit: Option<&str>, extra: Value) -> CronJob {
    let annotations = exit.map_or(json!({}), |e| json!({ kubelet::EXIT: e }));
    let mut spec = json!({
        "schedule": "*/1 * * * *",
        "concurrencyPolicy": policy,
        "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1"}]},
        }}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("cronjob")
}

async fn create_cron(c: &Client, cj: &CronJob) {
    let api: Api<CronJob> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), cj)
        .await
        .expect("create cronjob");
}

async fn active_names(c: &Client, name: &str) -> Vec<String> {
    let api: Api<CronJob> = Api::namespaced(c.clone(), "default");
    let cj = api.get(name).await.expect("get cronjob");
    cj.status
        .and_then(|s| s.active)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_allow_runs_concurrently() {
    let s = Shifted::start().await;
    create_cron(&s.client, &cron_manifest("allow", "Allow", None, json!({}))).await;
    let (first, jobs) = s.tick("allow", 1).await;
    let j = &jobs[0];
    assert_eq!(j.name_any(), format!("allow-{}", first.timestamp() / 60));
    assert_eq!(
        j.annotations()[cronjob::sync::SCHEDULED_TIMESTAMP],
        first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(j.labels()["cron"], "allow");
    let r = &j.owner_references()[0];
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.controller),
        ("CronJob", "allow", Some(true))
    );
    let (_, jobs) = s.tick("allow", 2).await;
    assert_eq!(jobs.len(), 2);
    let c = s.client.clone();
    eventually(T, "both active in status", || {
        let c = c.clone();
        async move { (active_names(&c, "allow").await.len() == 2).then_some(()) }
    })
    .await;
    let api: Api<CronJob> = Api::namespaced(s.client.clone(), "default");
    let st = api.get("allow").await.expect("get").status.expect("status");
    assert!(st
        .last_schedule_time
        .is_some_and(|t| t.0.as_second() > first.timestamp()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_forbid_skips_while_active() {
    let s = Shifted::start().await;
    create_cron(
        &s.client,
        &cron_manifest("forbid", "Forbid", None, json!({})),
    )
    .await;
    let (first, _) = s.tick("forbid", 1).await;
    let c = s.client.clone();
    eventually(T, "active in status", || {
        let c = c.clone();
        async move { (active_names(&c, "forbid").await.len() == 1).then_some(()) }
    })
    .await;
    s.next_minute();
    s.poke("forbid").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1, "Forbid starts nothing while a run is active");
    assert_eq!(
        jobs[0].name_any(),
        cronjob::schedule::job_name("forbid", first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_replace_deletes_active() {
    let s = Shifted::start().await;
    create_cron(
        &s.client,
        &cron_manifest("repl", "Replace", None, json!({})),
    )
    .await;
    let (first, _) = s.tick("repl", 1).await;
    let c = s.client.clone();
    eventually(T, "active in status", || {
        let c = c.clone();
        async move { (active_names(&c, "repl").await.len() == 1).then_some(()) }
    })
    .await;
    let (second, jobs) = s.tick("repl", 1).await;
    assert_eq!(
        jobs[0].name_any(),
        cronjob::schedule::job_name("repl", second)
    );
    assert_ne!(first, second);
    let want = vec![cronjob::schedule::job_name("repl", second)];
    eventually(T, "only the new job active", || {
        let (c, want) = (c.clone(), want.clone());
        async move { (active_names(&c, "repl").await == want).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_history_limits() {
    let s = Shifted::start().await;
    let extra = json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1});
    create_cron(
        &s.client,
        &cron_manifest("hist", "Forbid", Some("100:0"), extra),
    )
    .await;
    let mut last = None;
    for _ in 0..3 {
        let (at, _) = s.tick("hist", 1).await;
        let name = cronjob::schedule::job_name("hist", at);
        wait_condition(&s.client, &name, "Complete", T).await;
        last = Some(name);
    }
    let last = last.expect("ran");
    let c = s.client.clone();
    eventually(T, "pruned to one successful job", || async {
        let jobs = s.jobs().await;
        (jobs.len() == 1 && jobs[0].name_any() == last).then_some(())
    })
    .await;
    let api: Api<CronJob> = Api::namespaced(c.clone(), "default");
    eventually(T, "lastSuccessfulTime", || {
        let api = api.clone();
        async move {
            let st = api.get("hist").await.ok()?.status?;
            (st.last_successful_time.is_some() && st.active.is_none()).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_starting_deadline_skips_late_runs() {
    let s = Shifted::start().await;
    let extra = json!({"startingDeadlineSeconds": 10});
    create_cron(&s.client, &cron_manifest("late", "Allow", None, extra)).await;
    // 30 s past the boundary: that run is older than the 10 s deadline, so it is skipped.
    s.past_next_minute(30);
    s.poke("late").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.jobs().await.is_empty(),
        "a run later than its deadline does not start"
    );
    // 5 s past the next boundary: within the deadline, it runs.
    let at = s.past_next_minute(5);
    s.poke("late").await;
    let jobs = eventually(T, "the run within its deadline", || async {
        let jobs = s.jobs().await;
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name_any(), cronjob::schedule::job_name("late", at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_suspended_creates_nothing() {
    let s = Shifted::start().await;
    create_cron(
        &s.client,
        &cron_manifest("susp", "Allow", None, json!({"suspend": true})),
    )
    .await;
    s.next_minute();
    s.poke("susp").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.jobs().await.is_empty());
    let api: Api<CronJob> = Api::namespaced(s.client.clone(), "default");
    api.patch(
        "susp",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("unsuspend");
    // The missed run (within no deadline) starts once resumed.
    eventually(T, "missed run after resume", || async {
        (s.jobs().await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_jobs_and_cronjobs() {
    let c = Cluster::start().await;
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().expect("tempdir"),
    };
    k.ok(&[
        "create",
        "job",
        "hello",
        "--image=busybox:1",
        "--",
        "sh",
        "-c",
        "exit 0",
    ])
    .await;
    let out = k
        .ok(&[
            "wait",
            "--for=condition=complete",
            "job/hello",
            "--timeout=30s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
    let out = k.ok(&["get", "job", "hello"]).await;
    assert!(out.contains("hello"), "{out}");

    k.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1",
        "--schedule=*/1 * * * *",
        "--",
        "sh",
        "-c",
        "exit 0",
    ])
    .await;
    // A CronJob whose last run was missed (lastScheduleTime 3 minutes ago) runs at once.
    let past = (Utc::now() - chrono::Duration::minutes(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"lastScheduleTime": past}}).to_string();
    k.ok(&[
        "patch",
        "cronjob",
        "tick",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .await;
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let scheduled = eventually(T, "a job from the missed schedule", || {
        let api = api.clone();
        async move {
            let jobs = api.list(&ListParams::default()).await.ok()?.items;
            jobs.into_iter().find(|j| {
                j.name_any().starts_with("tick-")
                    && j.annotations()
                        .contains_key(cronjob::sync::SCHEDULED_TIMESTAMP)
            })
        }
    })
    .await;
    let name = scheduled.name_any();
    k.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=30s",
    ])
    .await;

    k.ok(&["create", "job", "manual", "--from=cronjob/tick"])
        .await;
    let out = k
        .ok(&[
            "wait",
            "--for=condition=complete",
            "job/manual",
            "--timeout=30s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
    let manual = api.get("manual").await.expect("manual job");
    assert_eq!(manual.owner_references()[0].name, "tick");
    let out = k
        .ok(&[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ])
        .await;
    assert!(!out.trim().is_empty(), "lastSuccessfulTime: {out:?}");
}
