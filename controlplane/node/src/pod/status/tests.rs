use super::*;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec, Probe, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use RuntimeState::{Created, Exited, Running};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn ctr(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(format!("registry.test/{name}:1")),
        ..Default::default()
    }
}

fn sidecar(name: &str) -> Container {
    Container {
        restart_policy: Some("Always".into()),
        ..ctr(name)
    }
}

fn probed(c: Container) -> Container {
    Container {
        readiness_probe: Some(Probe::default()),
        ..c
    }
}

/// A pod with `restartPolicy` `policy` ("" leaves it unset).
fn pod(policy: &str, init: Vec<Container>, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            restart_policy: (!policy.is_empty()).then(|| policy.to_string()),
            ..Default::default()
        }),
        status: None,
    }
}

fn with_status(mut p: Pod, status: PodStatus) -> Pod {
    p.status = Some(status);
    p
}

const SEC: i64 = 1_000_000_000;

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn now() -> Time {
    t(1_000_000)
}

/// Attempt `attempt` of container `name`: started at 100+attempt s, finished at 200+attempt s.
fn oc(name: &str, attempt: u32, state: RuntimeState, exit_code: i32) -> ObservedContainer {
    ObservedContainer {
        id: format!("{name}-{attempt}"),
        name: name.into(),
        attempt,
        state,
        started_at: if state == Created {
            0
        } else {
            (100 + i64::from(attempt)) * SEC
        },
        finished_at: if state == Exited {
            (200 + i64::from(attempt)) * SEC
        } else {
            0
        },
        exit_code,
        reason: String::new(),
        message: String::new(),
        image_ref: format!("sha256:{name}"),
    }
}

fn observed(containers: Vec<ObservedContainer>) -> Observed {
    Observed {
        sandbox: Some(ObservedSandbox {
            id: "sb-1".into(),
            ready: true,
            ips: vec!["10.0.0.7".into()],
        }),
        containers,
        host_ip: "192.168.1.2".into(),
        ..Default::default()
    }
}

fn waiting_for(obs: &mut Observed, name: &str, reason: &str, message: &str) {
    obs.waiting
        .insert(name.into(), (reason.into(), message.into()));
}

// ContainerStatus fixtures for `phase`, with the meaning of upstream's helpers of the same name.

fn status(name: &str, state: ContainerState, last: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(state),
        last_state: Some(last),
        ..Default::default()
    }
}

fn run_state() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

fn exit_state(exit_code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn wait_state() -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting::default()),
        ..Default::default()
    }
}

/// Running, startup not (yet) confirmed.
fn running(name: &str) -> ContainerStatus {
    status(name, run_state(), ContainerState::default())
}

/// Running and started.
fn started(name: &str) -> ContainerStatus {
    ContainerStatus {
        started: Some(true),
        ..running(name)
    }
}

fn exited(name: &str, code: i32) -> ContainerStatus {
    status(name, exit_state(code), ContainerState::default())
}

fn waiting(name: &str) -> ContainerStatus {
    status(name, wait_state(), ContainerState::default())
}

/// Waiting to restart after a run that exited with `code` (upstream's crash-loop fixtures).
fn crashed(name: &str, code: i32) -> ContainerStatus {
    status(name, wait_state(), exit_state(code))
}

// ---------------------------------------------------------------------------------------------
// phase
// ---------------------------------------------------------------------------------------------

struct PhaseCase {
    name: &'static str,
    init: Vec<ContainerStatus>,
    app: Vec<ContainerStatus>,
    want: &'static str,
}

fn phase_case(
    name: &'static str,
    init: Vec<ContainerStatus>,
    app: Vec<ContainerStatus>,
    want: &'static str,
) -> PhaseCase {
    PhaseCase {
        name,
        init,
        app,
        want,
    }
}

/// Runs `cases` against `p`. `initialized` is what `compute` passes: here, as upstream's
/// `HasAnyRegularContainerStarted`, whether any regular container has run.
fn check_phases(group: &str, p: &Pod, cases: Vec<PhaseCase>) {
    for c in cases {
        let has_run = c.app.iter().any(|s| {
            let st = s.state.as_ref().unwrap();
            st.running.is_some() || st.terminated.is_some()
        });
        let got = phase(p, &c.init, &c.app, has_run);
        assert_eq!(got, c.want, "{group}: {}", c.name);
    }
}

#[test]
fn phase_with_restart_always() {
    // Upstream TestPodPhaseWithRestartAlways (without the podIsTerminal cases).
    let p = pod("Always", vec![], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("waiting", vec![], vec![], "Pending"),
        phase_case(
            "all running",
            vec![],
            vec![running("a"), running("b")],
            "Running",
        ),
        phase_case(
            "all stopped with restart always",
            vec![],
            vec![exited("a", 0), exited("b", 0)],
            "Running",
        ),
        phase_case(
            "all failed with restart always",
            vec![],
            vec![exited("a", 1), exited("b", 2)],
            "Running",
        ),
        phase_case(
            "mixed state #1",
            vec![],
            vec![running("a"), exited("b", 0)],
            "Running",
        ),
        phase_case("mixed state #2", vec![], vec![running("a")], "Pending"),
        phase_case(
            "mixed state #3",
            vec![],
            vec![running("a"), waiting("b")],
            "Pending",
        ),
        phase_case(
            "backoff crashloop container",
            vec![],
            vec![running("a"), crashed("b", 0)],
            "Running",
        ),
        phase_case(
            "every container in backoff",
            vec![],
            vec![crashed("a", 1), crashed("b", 1)],
            "Running",
        ),
    ];
    check_phases("Always", &p, cases);
    // No restartPolicy means Always.
    let unset = pod("", vec![], vec![ctr("a")]);
    assert_eq!(phase(&unset, &[], &[exited("a", 0)], true), "Running");
}

#[test]
fn phase_with_restart_always_init_containers() {
    // Upstream TestPodPhaseWithRestartAlwaysInitContainers.
    let p = pod("Always", vec![ctr("x")], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("empty, waiting", vec![], vec![], "Pending"),
        phase_case(
            "init container running",
            vec![running("x")],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container terminated non-zero",
            vec![exited("x", 1)],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container waiting, terminated zero",
            vec![crashed("x", 0)],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container waiting, terminated non-zero",
            vec![crashed("x", 1)],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container waiting, not terminated",
            vec![waiting("x")],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container succeeded",
            vec![exited("x", 0)],
            vec![running("a"), running("b")],
            "Running",
        ),
    ];
    check_phases("Always+init", &p, cases);
}

#[test]
fn phase_with_restart_always_sidecars() {
    // Upstream TestPodPhaseWithRestartAlwaysRestartableInitContainers.
    let p = pod("Always", vec![sidecar("x")], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("empty, waiting", vec![], vec![], "Pending"),
        phase_case("sidecar running", vec![running("x")], vec![], "Pending"),
        phase_case("sidecar stopped", vec![exited("x", 0)], vec![], "Pending"),
        phase_case(
            "sidecar waiting, terminated zero",
            vec![crashed("x", 0)],
            vec![],
            "Pending",
        ),
        phase_case(
            "sidecar waiting, terminated non-zero",
            vec![crashed("x", 1)],
            vec![],
            "Pending",
        ),
        phase_case(
            "sidecar waiting, not terminated",
            vec![waiting("x")],
            vec![],
            "Pending",
        ),
        phase_case(
            "sidecar started, 1/2 regular container running",
            vec![started("x")],
            vec![running("a")],
            "Pending",
        ),
        phase_case(
            "sidecar started, all regular containers running",
            vec![started("x")],
            vec![running("a"), running("b")],
            "Running",
        ),
        phase_case(
            "sidecar running, all regular containers running",
            vec![running("x")],
            vec![running("a"), running("b")],
            "Running",
        ),
        phase_case(
            "sidecar stopped, all regular containers running",
            vec![exited("x", 1)],
            vec![running("a"), running("b")],
            "Running",
        ),
        phase_case(
            "backoff crashloop sidecar, all regular containers running",
            vec![crashed("x", 1)],
            vec![running("a"), running("b")],
            "Running",
        ),
    ];
    check_phases("Always+sidecar", &p, cases);
}

#[test]
fn phase_with_restart_always_and_pod_has_run() {
    // Upstream TestPodPhaseWithRestartAlwaysAndPodHasRun.
    let p = pod("Always", vec![ctr("x"), sidecar("y")], vec![ctr("a")]);
    let cases = vec![
        phase_case(
            "regular init, sidecar and regular container all running",
            vec![running("x"), running("y")],
            vec![running("a")],
            "Pending",
        ),
        phase_case(
            "regular container stopped, regular init and sidecar running",
            vec![running("x"), running("y")],
            vec![exited("a", 0)],
            "Pending",
        ),
        phase_case(
            "regular init succeeded, sidecar running, regular container stopped",
            vec![exited("x", 0), running("y")],
            vec![exited("a", 0)],
            "Running",
        ),
        phase_case(
            "regular init succeeded, sidecar and regular container running",
            vec![exited("x", 0), running("y")],
            vec![running("a")],
            "Running",
        ),
    ];
    check_phases("Always+has-run", &p, cases);
}

#[test]
fn phase_with_restart_never() {
    // Upstream TestPodPhaseWithRestartNever.
    let p = pod("Never", vec![], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("waiting", vec![], vec![], "Pending"),
        phase_case(
            "all running",
            vec![],
            vec![running("a"), running("b")],
            "Running",
        ),
        phase_case(
            "all succeeded",
            vec![],
            vec![exited("a", 0), exited("b", 0)],
            "Succeeded",
        ),
        phase_case(
            "all failed",
            vec![],
            vec![exited("a", 1), exited("b", 137)],
            "Failed",
        ),
        phase_case(
            "one failed, one succeeded",
            vec![],
            vec![exited("a", 0), exited("b", 1)],
            "Failed",
        ),
        phase_case(
            "mixed state #1",
            vec![],
            vec![running("a"), exited("b", 0)],
            "Running",
        ),
        phase_case("mixed state #2", vec![], vec![running("a")], "Pending"),
        phase_case(
            "mixed state #3",
            vec![],
            vec![running("a"), waiting("b")],
            "Pending",
        ),
        // A waiting container with a previous termination counts as stopped, never as
        // succeeded (upstream getPhase).
        phase_case(
            "waiting after a run counts as stopped, not succeeded",
            vec![],
            vec![exited("a", 0), crashed("b", 0)],
            "Failed",
        ),
    ];
    check_phases("Never", &p, cases);
}

#[test]
fn phase_with_restart_never_init_containers() {
    // Upstream TestPodPhaseWithRestartNeverInitContainers.
    let p = pod("Never", vec![ctr("x")], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("empty, waiting", vec![], vec![], "Pending"),
        phase_case(
            "init container running",
            vec![running("x")],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container terminated non-zero",
            vec![exited("x", 1)],
            vec![],
            "Failed",
        ),
        phase_case(
            "init container waiting, terminated zero",
            vec![crashed("x", 0)],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container waiting, terminated non-zero",
            vec![crashed("x", 1)],
            vec![],
            "Failed",
        ),
        phase_case(
            "init container waiting, not terminated",
            vec![waiting("x")],
            vec![],
            "Pending",
        ),
        phase_case(
            "init container succeeded",
            vec![exited("x", 0)],
            vec![running("a"), running("b")],
            "Running",
        ),
    ];
    check_phases("Never+init", &p, cases);
}

#[test]
fn phase_with_restart_never_sidecars() {
    // Upstream TestPodPhaseWithRestartNeverRestartableInitContainers.
    let p = pod("Never", vec![sidecar("x")], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("empty, waiting", vec![], vec![], "Pending"),
        phase_case("sidecar running", vec![running("x")], vec![], "Pending"),
        phase_case("sidecar stopped", vec![exited("x", 0)], vec![], "Pending"),
        phase_case(
            "sidecar waiting, terminated zero",
            vec![crashed("x", 0)],
            vec![],
            "Pending",
        ),
        phase_case(
            "sidecar waiting, terminated non-zero",
            vec![crashed("x", 1)],
            vec![],
            "Pending",
        ),
        phase_case(
            "sidecar waiting, not terminated",
            vec![waiting("x")],
            vec![],
            "Pending",
        ),
        phase_case(
            "sidecar started, one main container running",
            vec![started("x")],
            vec![running("a")],
            "Pending",
        ),
        phase_case(
            "sidecar started, main containers succeeded",
            vec![started("x")],
            vec![exited("a", 0), exited("b", 0)],
            "Running",
        ),
        phase_case(
            "sidecar running, main containers succeeded",
            vec![running("x")],
            vec![exited("a", 0), exited("b", 0)],
            "Running",
        ),
        phase_case(
            "all containers succeeded",
            vec![exited("x", 0)],
            vec![exited("a", 0), exited("b", 0)],
            "Succeeded",
        ),
        phase_case(
            "sidecar terminated non-zero, main containers succeeded",
            vec![exited("x", 1)],
            vec![exited("a", 0), exited("b", 0)],
            "Succeeded",
        ),
        phase_case(
            "backoff crashloop sidecar, main containers succeeded",
            vec![crashed("x", 0)],
            vec![exited("a", 0), exited("b", 0)],
            "Succeeded",
        ),
        phase_case(
            "backoff crashloop with non-zero sidecar, main containers succeeded",
            vec![crashed("x", 1)],
            vec![exited("a", 0), exited("b", 0)],
            "Succeeded",
        ),
    ];
    check_phases("Never+sidecar", &p, cases);
}

#[test]
fn phase_with_restart_on_failure() {
    // Upstream TestPodPhaseWithRestartOnFailure.
    let p = pod("OnFailure", vec![], vec![ctr("a"), ctr("b")]);
    let cases = vec![
        phase_case("waiting", vec![], vec![], "Pending"),
        phase_case(
            "all running",
            vec![],
            vec![running("a"), running("b")],
            "Running",
        ),
        phase_case(
            "all succeeded",
            vec![],
            vec![exited("a", 0), exited("b", 0)],
            "Succeeded",
        ),
        phase_case(
            "all failed",
            vec![],
            vec![exited("a", 1), exited("b", 1)],
            "Running",
        ),
        phase_case(
            "one failed, one succeeded",
            vec![],
            vec![exited("a", 0), exited("b", 1)],
            "Running",
        ),
        phase_case(
            "mixed state #1",
            vec![],
            vec![running("a"), exited("b", 0)],
            "Running",
        ),
        phase_case("mixed state #2", vec![], vec![running("a")], "Pending"),
        phase_case(
            "mixed state #3",
            vec![],
            vec![running("a"), waiting("b")],
            "Pending",
        ),
        phase_case(
            "backoff crashloop container",
            vec![],
            vec![running("a"), crashed("b", 1)],
            "Running",
        ),
        phase_case(
            "succeeded and waiting after a run",
            vec![],
            vec![exited("a", 0), crashed("b", 0)],
            "Running",
        ),
    ];
    check_phases("OnFailure", &p, cases);
    // Init containers under OnFailure: failures restart, so the pod stays Pending.
    let init = pod("OnFailure", vec![ctr("x")], vec![ctr("a")]);
    assert_eq!(phase(&init, &[crashed("x", 1)], &[], false), "Pending");
}

// ---------------------------------------------------------------------------------------------
// is_sidecar, initialized
// ---------------------------------------------------------------------------------------------

#[test]
fn sidecars_are_init_containers_that_always_restart() {
    let cases: &[(Option<&str>, bool)] = &[
        (None, false),
        (Some("Always"), true),
        (Some("OnFailure"), false),
        (Some("Never"), false),
    ];
    for &(policy, want) in cases {
        let c = Container {
            restart_policy: policy.map(str::to_string),
            ..ctr("x")
        };
        assert_eq!(is_sidecar(&c), want, "{policy:?}");
    }
}

#[test]
fn initialized_follows_init_containers() {
    struct Case {
        name: &'static str,
        init: Vec<Container>,
        containers: Vec<ObservedContainer>,
        started: &'static [(&'static str, bool)],
        want: bool,
    }
    let cases = vec![
        Case {
            name: "no init containers",
            init: vec![],
            containers: vec![],
            started: &[],
            want: true,
        },
        Case {
            name: "init container not created",
            init: vec![ctr("x")],
            containers: vec![],
            started: &[],
            want: false,
        },
        Case {
            name: "init container created",
            init: vec![ctr("x")],
            containers: vec![oc("x", 0, Created, 0)],
            started: &[],
            want: false,
        },
        Case {
            name: "init container running",
            init: vec![ctr("x")],
            containers: vec![oc("x", 0, Running, 0)],
            started: &[],
            want: false,
        },
        Case {
            name: "init container succeeded",
            init: vec![ctr("x")],
            containers: vec![oc("x", 0, Exited, 0)],
            started: &[],
            want: true,
        },
        Case {
            name: "init container failed",
            init: vec![ctr("x")],
            containers: vec![oc("x", 0, Exited, 1)],
            started: &[],
            want: false,
        },
        Case {
            name: "init container succeeded on its second attempt",
            init: vec![ctr("x")],
            containers: vec![oc("x", 1, Exited, 0), oc("x", 0, Exited, 1)],
            started: &[],
            want: true,
        },
        Case {
            name: "second init container still running",
            init: vec![ctr("x"), ctr("y")],
            containers: vec![oc("x", 0, Exited, 0), oc("y", 0, Running, 0)],
            started: &[],
            want: false,
        },
        Case {
            name: "sidecar running without a startup probe",
            init: vec![sidecar("s")],
            containers: vec![oc("s", 0, Running, 0)],
            started: &[],
            want: true,
        },
        Case {
            name: "sidecar running, startup probe not passed",
            init: vec![sidecar("s")],
            containers: vec![oc("s", 0, Running, 0)],
            started: &[("s", false)],
            want: false,
        },
        Case {
            name: "sidecar running, startup probe passed",
            init: vec![sidecar("s")],
            containers: vec![oc("s", 0, Running, 0)],
            started: &[("s", true)],
            want: true,
        },
        Case {
            name: "sidecar exited before the pod started",
            init: vec![sidecar("s")],
            containers: vec![oc("s", 0, Exited, 0)],
            started: &[],
            want: false,
        },
        // Upstream GeneratePodInitializedCondition: once a regular container has started the
        // pod has been initialized, and a restarting sidecar does not undo that.
        Case {
            name: "sidecar restarting after a regular container started",
            init: vec![ctr("x"), sidecar("s")],
            containers: vec![
                oc("x", 0, Exited, 0),
                oc("s", 1, Exited, 1),
                oc("a", 0, Running, 0),
            ],
            started: &[],
            want: true,
        },
    ];
    for c in cases {
        let p = pod("Always", c.init, vec![ctr("a")]);
        let mut obs = observed(c.containers);
        for (name, ok) in c.started {
            obs.started.insert(name.to_string(), *ok);
        }
        assert_eq!(initialized(&p, &obs), c.want, "{}", c.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Container statuses
// ---------------------------------------------------------------------------------------------

fn term(id: &str, exit_code: i32, reason: &str, attempt: i64) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(format!("kennel://{id}")),
            exit_code,
            reason: Some(reason.into()),
            started_at: Some(t(100 + attempt)),
            finished_at: Some(t(200 + attempt)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_at(attempt: i64) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(t(100 + attempt)),
        }),
        ..Default::default()
    }
}

fn wait_reason(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    }
}

#[test]
fn container_status_follows_the_runtime() {
    struct Case {
        name: &'static str,
        containers: Vec<ObservedContainer>,
        waiting: Option<(&'static str, &'static str)>,
        state: ContainerState,
        last_state: ContainerState,
        restart_count: i32,
        container_id: Option<&'static str>,
    }
    let mut oom = oc("a", 0, Exited, 137);
    oom.reason = "OOMKilled".into();
    oom.message = "out of memory".into();
    let oom_state = ContainerState {
        terminated: Some(ContainerStateTerminated {
            message: Some("out of memory".into()),
            ..term("a-0", 137, "OOMKilled", 0).terminated.unwrap()
        }),
        ..Default::default()
    };
    let cases = vec![
        Case {
            name: "not created yet",
            containers: vec![],
            waiting: None,
            state: wait_reason("ContainerCreating", None),
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: None,
        },
        Case {
            name: "created, not started",
            containers: vec![oc("a", 0, Created, 0)],
            waiting: None,
            state: wait_reason("ContainerCreating", None),
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: Some("kennel://a-0"),
        },
        Case {
            name: "running",
            containers: vec![oc("a", 0, Running, 0)],
            waiting: None,
            state: run_at(0),
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: Some("kennel://a-0"),
        },
        Case {
            name: "exited zero without a runtime reason",
            containers: vec![oc("a", 0, Exited, 0)],
            waiting: None,
            state: term("a-0", 0, "Completed", 0),
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: Some("kennel://a-0"),
        },
        Case {
            name: "exited non-zero without a runtime reason",
            containers: vec![oc("a", 0, Exited, 3)],
            waiting: None,
            state: term("a-0", 3, "Error", 0),
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: Some("kennel://a-0"),
        },
        Case {
            name: "runtime reason and message are kept",
            containers: vec![oom],
            waiting: None,
            state: oom_state,
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: Some("kennel://a-0"),
        },
        Case {
            name: "restarted: count from the latest attempt, last state from the previous",
            containers: vec![
                oc("a", 0, Exited, 1),
                oc("a", 2, Running, 0),
                oc("a", 1, Exited, 2),
            ],
            waiting: None,
            state: run_at(2),
            last_state: term("a-1", 2, "Error", 1),
            restart_count: 2,
            container_id: Some("kennel://a-2"),
        },
        Case {
            name: "crash loop: the exited attempt becomes the last state",
            containers: vec![oc("a", 3, Exited, 1), oc("a", 2, Exited, 1)],
            waiting: Some((
                "CrashLoopBackOff",
                "back-off 40s restarting failed container",
            )),
            state: wait_reason(
                "CrashLoopBackOff",
                Some("back-off 40s restarting failed container"),
            ),
            last_state: term("a-3", 1, "Error", 3),
            restart_count: 3,
            container_id: Some("kennel://a-3"),
        },
        Case {
            name: "image pull error before the first start",
            containers: vec![],
            waiting: Some(("ErrImagePull", "pull failed")),
            state: wait_reason("ErrImagePull", Some("pull failed")),
            last_state: ContainerState::default(),
            restart_count: 0,
            container_id: None,
        },
        Case {
            name: "start error after a created attempt",
            containers: vec![oc("a", 1, Created, 0), oc("a", 0, Exited, 1)],
            waiting: Some(("RunContainerError", "boom")),
            state: wait_reason("RunContainerError", Some("boom")),
            last_state: term("a-0", 1, "Error", 0),
            restart_count: 1,
            container_id: Some("kennel://a-1"),
        },
        Case {
            name: "a waiting reason is ignored while running",
            containers: vec![oc("a", 1, Running, 0), oc("a", 0, Exited, 1)],
            waiting: Some(("CrashLoopBackOff", "stale")),
            state: run_at(1),
            last_state: term("a-0", 1, "Error", 0),
            restart_count: 1,
            container_id: Some("kennel://a-1"),
        },
    ];
    for c in cases {
        let p = pod("Always", vec![], vec![ctr("a")]);
        let mut obs = observed(c.containers);
        if let Some((reason, message)) = c.waiting {
            waiting_for(&mut obs, "a", reason, message);
        }
        let st = compute(&p, &obs, &now());
        let got = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!(got.name, "a", "{}", c.name);
        assert_eq!(got.image, "registry.test/a:1", "{}", c.name);
        assert_eq!(got.state.as_ref(), Some(&c.state), "{}: state", c.name);
        assert_eq!(
            got.last_state.as_ref(),
            Some(&c.last_state),
            "{}: last state",
            c.name
        );
        assert_eq!(got.restart_count, c.restart_count, "{}: restarts", c.name);
        assert_eq!(
            got.container_id.as_deref(),
            c.container_id,
            "{}: id",
            c.name
        );
        let want_image_id = if c.container_id.is_some() {
            "sha256:a"
        } else {
            ""
        };
        assert_eq!(got.image_id, want_image_id, "{}: image id", c.name);
    }
}

#[test]
fn started_and_ready_follow_probes() {
    struct Case {
        name: &'static str,
        readiness_probe: bool,
        state: RuntimeState,
        readiness: Option<bool>,
        startup: Option<bool>,
        started: bool,
        ready: bool,
    }
    let case = |name, readiness_probe, state, readiness, startup, started, ready| Case {
        name,
        readiness_probe,
        state,
        readiness,
        startup,
        started,
        ready,
    };
    let cases = vec![
        case("running, no probes", false, Running, None, None, true, true),
        case(
            "running, readiness probe not run yet",
            true,
            Running,
            None,
            None,
            true,
            false,
        ),
        case(
            "running, readiness probe passed",
            true,
            Running,
            Some(true),
            None,
            true,
            true,
        ),
        case(
            "running, readiness probe failed",
            true,
            Running,
            Some(false),
            None,
            true,
            false,
        ),
        case(
            "running, startup probe not passed",
            true,
            Running,
            Some(true),
            Some(false),
            false,
            false,
        ),
        case(
            "running, startup probe passed",
            false,
            Running,
            None,
            Some(true),
            true,
            true,
        ),
        case("exited", false, Exited, None, None, false, false),
        case("created", false, Created, None, None, false, false),
    ];
    for c in cases {
        let a = if c.readiness_probe {
            probed(ctr("a"))
        } else {
            ctr("a")
        };
        let p = pod("Always", vec![], vec![a]);
        let mut obs = observed(vec![oc("a", 0, c.state, 0)]);
        if let Some(r) = c.readiness {
            obs.readiness.insert("a".into(), r);
        }
        if let Some(s) = c.startup {
            obs.started.insert("a".into(), s);
        }
        let st = compute(&p, &obs, &now());
        let got = &st.container_statuses.unwrap()[0];
        assert_eq!(got.started, Some(c.started), "{}: started", c.name);
        assert_eq!(got.ready, c.ready, "{}: ready", c.name);
    }
}

#[test]
fn init_container_statuses() {
    // Regular init containers are ready once they exited 0 (upstream prober manager); sidecars
    // are ready like app containers. App containers of a pod with init containers wait with
    // PodInitializing until they are created (upstream convertToAPIContainerStatuses).
    let p = pod(
        "Always",
        vec![ctr("x"), sidecar("s"), ctr("y")],
        vec![ctr("a")],
    );
    let obs = observed(vec![
        oc("x", 0, Exited, 0),
        oc("s", 0, Running, 0),
        oc("y", 0, Running, 0),
    ]);
    let st = compute(&p, &obs, &now());
    let init = st.init_container_statuses.unwrap();
    let summary: Vec<(&str, bool, Option<bool>)> = init
        .iter()
        .map(|s| (s.name.as_str(), s.ready, s.started))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("x", true, Some(false)),
            ("s", true, Some(true)),
            ("y", false, Some(true)),
        ]
    );
    let app = &st.container_statuses.unwrap()[0];
    assert_eq!(app.state, Some(wait_reason("PodInitializing", None)));
    assert_eq!(st.phase.as_deref(), Some("Pending"));

    // Initialized, app container not created yet: still PodInitializing.
    let obs = observed(vec![
        oc("x", 0, Exited, 0),
        oc("s", 0, Running, 0),
        oc("y", 0, Exited, 0),
    ]);
    let st = compute(&p, &obs, &now());
    let app = &st.container_statuses.unwrap()[0];
    assert_eq!(app.state, Some(wait_reason("PodInitializing", None)));

    // Init containers the runtime lost once the app containers exist have completed
    // (upstream convertToAPIContainerStatuses).
    let obs = observed(vec![oc("s", 0, Running, 0), oc("a", 0, Running, 0)]);
    let st = compute(&p, &obs, &now());
    let init = st.init_container_statuses.unwrap();
    let summary: Vec<(&str, Option<i32>, bool)> = init
        .iter()
        .map(|s| {
            let exit = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .map(|t| t.exit_code);
            (s.name.as_str(), exit, s.ready)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("x", Some(0), true),
            ("s", None, true),
            ("y", Some(0), true)
        ]
    );
    assert_eq!(
        init[0]
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .and_then(|t| t.reason.as_deref()),
        Some("Completed")
    );
    assert_eq!(st.phase.as_deref(), Some("Running"));
    // A lost sidecar is not inferred: it waits to be started again.
    let obs = observed(vec![oc("a", 0, Running, 0)]);
    let st = compute(&p, &obs, &now());
    let s = &st.init_container_statuses.unwrap()[1];
    assert_eq!(s.state, Some(wait_reason("PodInitializing", None)));
    assert_eq!(st.phase.as_deref(), Some("Pending"));

    // A pod without init containers has no init container statuses.
    let plain = pod("Always", vec![], vec![ctr("a")]);
    let st = compute(&plain, &observed(vec![]), &now());
    assert_eq!(st.init_container_statuses, None);
}

// ---------------------------------------------------------------------------------------------
// compute: phase, conditions
// ---------------------------------------------------------------------------------------------

type Cond = (&'static str, &'static str, Option<&'static str>);

fn conditions_of(st: &PodStatus) -> Vec<(String, String, Option<String>)> {
    let mut v: Vec<_> = st
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect();
    v.sort();
    v
}

fn want_conditions(want: &[Cond]) -> Vec<(String, String, Option<String>)> {
    let mut v: Vec<_> = want
        .iter()
        .map(|(t, s, r)| (t.to_string(), s.to_string(), r.map(str::to_string)))
        .collect();
    v.sort();
    v
}

#[test]
fn compute_phase_and_conditions() {
    struct Case {
        name: &'static str,
        pod: Pod,
        obs: Observed,
        phase: &'static str,
        conditions: &'static [Cond],
    }
    let gate = |mut p: Pod, old: Option<&'static str>| {
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "example.com/gate".into(),
        }]);
        if let Some(s) = old {
            p.status = Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "example.com/gate".into(),
                    status: s.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
        p
    };
    let no_sandbox = Observed {
        host_ip: "192.168.1.2".into(),
        ..Default::default()
    };
    let mut sidecar_crashing = observed(vec![
        oc("x", 0, Exited, 0),
        oc("s", 1, Exited, 1),
        oc("s", 0, Exited, 1),
        oc("a", 0, Running, 0),
    ]);
    waiting_for(&mut sidecar_crashing, "s", "CrashLoopBackOff", "back-off");
    let mut init_crashing = observed(vec![oc("x", 0, Exited, 1)]);
    waiting_for(&mut init_crashing, "x", "CrashLoopBackOff", "back-off");
    let cases = vec![
        Case {
            name: "no sandbox yet",
            pod: pod("Always", vec![], vec![ctr("a")]),
            obs: no_sandbox,
            phase: "Pending",
            conditions: &[
                ("PodReadyToStartContainers", "False", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("ContainersNotReady")),
                ("ContainersReady", "False", Some("ContainersNotReady")),
            ],
        },
        Case {
            name: "all running and ready",
            pod: pod("Always", vec![], vec![ctr("a"), ctr("b")]),
            obs: observed(vec![oc("a", 0, Running, 0), oc("b", 0, Running, 0)]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "True", None),
                ("ContainersReady", "True", None),
            ],
        },
        Case {
            name: "one container not ready",
            pod: pod("Always", vec![], vec![ctr("a"), probed(ctr("b"))]),
            obs: observed(vec![oc("a", 0, Running, 0), oc("b", 0, Running, 0)]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("ContainersNotReady")),
                ("ContainersReady", "False", Some("ContainersNotReady")),
            ],
        },
        Case {
            name: "init container running",
            pod: pod("Always", vec![ctr("x")], vec![ctr("a")]),
            obs: observed(vec![oc("x", 0, Running, 0)]),
            phase: "Pending",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "False", Some("ContainersNotInitialized")),
                ("Ready", "False", Some("ContainersNotReady")),
                ("ContainersReady", "False", Some("ContainersNotReady")),
            ],
        },
        Case {
            name: "init container crash looping under Always",
            pod: pod("Always", vec![ctr("x")], vec![ctr("a")]),
            obs: init_crashing.clone(),
            phase: "Pending",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "False", Some("ContainersNotInitialized")),
                ("Ready", "False", Some("ContainersNotReady")),
                ("ContainersReady", "False", Some("ContainersNotReady")),
            ],
        },
        Case {
            name: "init container failed under Never",
            pod: pod("Never", vec![ctr("x")], vec![ctr("a")]),
            obs: observed(vec![oc("x", 0, Exited, 1)]),
            phase: "Failed",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "False", Some("ContainersNotInitialized")),
                ("Ready", "False", Some("PodFailed")),
                ("ContainersReady", "False", Some("PodFailed")),
            ],
        },
        Case {
            name: "sidecar crash looping after the pod started",
            pod: pod("Always", vec![ctr("x"), sidecar("s")], vec![ctr("a")]),
            obs: sidecar_crashing,
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("ContainersNotReady")),
                ("ContainersReady", "False", Some("ContainersNotReady")),
            ],
        },
        Case {
            name: "sidecar and containers running",
            pod: pod("Always", vec![ctr("x"), sidecar("s")], vec![ctr("a")]),
            obs: observed(vec![
                oc("x", 0, Exited, 0),
                oc("s", 0, Running, 0),
                oc("a", 0, Running, 0),
            ]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "True", None),
                ("ContainersReady", "True", None),
            ],
        },
        Case {
            name: "all succeeded under Never",
            pod: pod("Never", vec![], vec![ctr("a"), ctr("b")]),
            obs: observed(vec![oc("a", 0, Exited, 0), oc("b", 0, Exited, 0)]),
            phase: "Succeeded",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", Some("PodCompleted")),
                ("Ready", "False", Some("PodCompleted")),
                ("ContainersReady", "False", Some("PodCompleted")),
            ],
        },
        Case {
            name: "one failed under Never",
            pod: pod("Never", vec![], vec![ctr("a"), ctr("b")]),
            obs: observed(vec![oc("a", 0, Exited, 0), oc("b", 0, Exited, 1)]),
            phase: "Failed",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("PodFailed")),
                ("ContainersReady", "False", Some("PodFailed")),
            ],
        },
        Case {
            name: "failure restarting under OnFailure",
            pod: pod("OnFailure", vec![], vec![ctr("a"), ctr("b")]),
            obs: observed(vec![oc("a", 0, Exited, 0), oc("b", 0, Exited, 1)]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("ContainersNotReady")),
                ("ContainersReady", "False", Some("ContainersNotReady")),
            ],
        },
        Case {
            name: "sidecar failed, main containers succeeded under Never",
            pod: pod("Never", vec![sidecar("s")], vec![ctr("a")]),
            obs: observed(vec![oc("s", 0, Exited, 1), oc("a", 0, Exited, 0)]),
            phase: "Succeeded",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", Some("PodCompleted")),
                ("Ready", "False", Some("PodCompleted")),
                ("ContainersReady", "False", Some("PodCompleted")),
            ],
        },
        Case {
            name: "readiness gate condition missing",
            pod: gate(pod("Always", vec![], vec![ctr("a")]), None),
            obs: observed(vec![oc("a", 0, Running, 0)]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("ReadinessGatesNotReady")),
                ("ContainersReady", "True", None),
            ],
        },
        Case {
            name: "readiness gate condition False",
            pod: gate(pod("Always", vec![], vec![ctr("a")]), Some("False")),
            obs: observed(vec![oc("a", 0, Running, 0)]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "False", Some("ReadinessGatesNotReady")),
                ("ContainersReady", "True", None),
                ("example.com/gate", "False", None),
            ],
        },
        Case {
            name: "readiness gate condition True",
            pod: gate(pod("Always", vec![], vec![ctr("a")]), Some("True")),
            obs: observed(vec![oc("a", 0, Running, 0)]),
            phase: "Running",
            conditions: &[
                ("PodReadyToStartContainers", "True", None),
                ("Initialized", "True", None),
                ("Ready", "True", None),
                ("ContainersReady", "True", None),
                ("example.com/gate", "True", None),
            ],
        },
    ];
    for c in cases {
        let st = compute(&c.pod, &c.obs, &now());
        assert_eq!(st.phase.as_deref(), Some(c.phase), "{}: phase", c.name);
        assert_eq!(
            conditions_of(&st),
            want_conditions(c.conditions),
            "{}: conditions",
            c.name
        );
    }
}

#[test]
fn transition_times_are_kept_while_a_condition_holds() {
    let earlier = t(500);
    let old = |ty: &str, status: &str| PodCondition {
        type_: ty.into(),
        status: status.into(),
        last_transition_time: Some(earlier.clone()),
        ..Default::default()
    };
    let p = with_status(
        pod("Always", vec![], vec![probed(ctr("a"))]),
        PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![
                old("PodScheduled", "True"),
                old("PodReadyToStartContainers", "True"),
                old("Initialized", "True"),
                old("Ready", "False"),
                old("ContainersReady", "False"),
                old("DisruptionTarget", "True"),
            ]),
            ..Default::default()
        },
    );
    // (readiness result, condition type, expected lastTransitionTime)
    let cases: &[(bool, &str, bool)] = &[
        (false, "Ready", true),
        (false, "ContainersReady", true),
        (false, "Initialized", true),
        (false, "PodReadyToStartContainers", true),
        (true, "Ready", false),
        (true, "ContainersReady", false),
        (true, "Initialized", true),
        (true, "PodScheduled", true),
        (true, "DisruptionTarget", true),
    ];
    for &(ready, ty, kept) in cases {
        let mut obs = observed(vec![oc("a", 0, Running, 0)]);
        obs.readiness.insert("a".into(), ready);
        let st = compute(&p, &obs, &now());
        let conds = st.conditions.unwrap();
        let got = conds.iter().find(|c| c.type_ == ty).unwrap();
        let want = if kept { earlier.clone() } else { now() };
        assert_eq!(
            got.last_transition_time,
            Some(want),
            "ready={ready} {ty}: transition time"
        );
        assert_eq!(
            conds.iter().filter(|c| c.type_ == ty).count(),
            1,
            "{ty} appears once"
        );
    }
}

#[test]
fn terminal_phase_never_reverts() {
    let cases: &[(&str, &str, RuntimeState, i32)] = &[
        ("Succeeded", "Always", Running, 0),
        ("Succeeded", "OnFailure", Exited, 1),
        ("Failed", "Always", Running, 0),
        ("Failed", "Never", Exited, 0),
    ];
    for &(old, policy, state, exit) in cases {
        let p = with_status(
            pod(policy, vec![], vec![ctr("a")]),
            PodStatus {
                phase: Some(old.into()),
                ..Default::default()
            },
        );
        let st = compute(&p, &observed(vec![oc("a", 0, state, exit)]), &now());
        assert_eq!(st.phase.as_deref(), Some(old), "{old} under {policy}");
    }
}

#[test]
fn phase_reason_and_message_are_kept_with_the_phase() {
    // Upstream generateAPIPodStatus: while the phase is unchanged its reason and message stay.
    let p = with_status(
        pod("Always", vec![], vec![ctr("a")]),
        PodStatus {
            phase: Some("Failed".into()),
            reason: Some("OutOfmemory".into()),
            message: Some("Node didn't have enough resource: memory".into()),
            ..Default::default()
        },
    );
    let st = compute(&p, &observed(vec![]), &now());
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("OutOfmemory"));
    assert_eq!(
        st.message.as_deref(),
        Some("Node didn't have enough resource: memory")
    );
    // A phase change drops them.
    let p = with_status(
        pod("Always", vec![], vec![ctr("a")]),
        PodStatus {
            phase: Some("Pending".into()),
            reason: Some("Something".into()),
            ..Default::default()
        },
    );
    let st = compute(&p, &observed(vec![oc("a", 0, Running, 0)]), &now());
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.reason, None);
}

#[test]
fn rejected_pod_is_failed() {
    let p = with_status(
        pod("Always", vec![], vec![ctr("a")]),
        PodStatus {
            start_time: Some(t(42)),
            ..Default::default()
        },
    );
    let obs = Observed {
        host_ip: "192.168.1.2".into(),
        rejected: Some((
            "OutOfcpu".into(),
            "Pod was rejected: Node didn't have enough resource: cpu".into(),
        )),
        ..Default::default()
    };
    let st = compute(&p, &obs, &now());
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Node didn't have enough resource: cpu")
    );
    assert_eq!(st.host_ip.as_deref(), Some("192.168.1.2"));
    assert_eq!(st.start_time, Some(t(42)));
    assert_eq!(st.container_statuses, None);
}

#[test]
fn addresses_start_time_and_qos() {
    struct Case {
        name: &'static str,
        old: PodStatus,
        sandbox_ips: Option<Vec<&'static str>>,
        pod_ip: Option<&'static str>,
        pod_ips: Option<Vec<&'static str>>,
        start_time: Time,
    }
    let cases = vec![
        Case {
            name: "first status",
            old: PodStatus::default(),
            sandbox_ips: Some(vec!["10.0.0.7", "fd00::7"]),
            pod_ip: Some("10.0.0.7"),
            pod_ips: Some(vec!["10.0.0.7", "fd00::7"]),
            start_time: now(),
        },
        Case {
            name: "no sandbox: no address",
            old: PodStatus::default(),
            sandbox_ips: None,
            pod_ip: None,
            pod_ips: None,
            start_time: now(),
        },
        Case {
            name: "sandbox gone: the old addresses stay",
            old: PodStatus {
                pod_ip: Some("10.0.0.9".into()),
                pod_ips: Some(vec![PodIP {
                    ip: "10.0.0.9".into(),
                }]),
                start_time: Some(t(7)),
                ..Default::default()
            },
            sandbox_ips: Some(vec![]),
            pod_ip: Some("10.0.0.9"),
            pod_ips: Some(vec!["10.0.0.9"]),
            start_time: t(7),
        },
    ];
    for c in cases {
        let p = with_status(pod("Always", vec![], vec![ctr("a")]), c.old);
        let mut obs = observed(vec![]);
        match c.sandbox_ips {
            Some(ips) => {
                obs.sandbox.as_mut().unwrap().ips = ips.into_iter().map(Into::into).collect()
            }
            None => obs.sandbox = None,
        }
        let st = compute(&p, &obs, &now());
        assert_eq!(st.pod_ip.as_deref(), c.pod_ip, "{}: podIP", c.name);
        let ips = st
            .pod_ips
            .map(|v| v.into_iter().map(|p| p.ip).collect::<Vec<_>>());
        let want: Option<Vec<String>> = c
            .pod_ips
            .map(|v| v.into_iter().map(str::to_string).collect());
        assert_eq!(ips, want, "{}: podIPs", c.name);
        assert_eq!(st.start_time, Some(c.start_time), "{}: startTime", c.name);
        assert_eq!(st.host_ip.as_deref(), Some("192.168.1.2"), "{}", c.name);
        assert_eq!(
            st.host_ips,
            Some(vec![HostIP {
                ip: "192.168.1.2".into()
            }]),
            "{}",
            c.name
        );
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"), "{}", c.name);
    }
}

// ---------------------------------------------------------------------------------------------
// qos_class
// ---------------------------------------------------------------------------------------------

fn list(cpu: &str, memory: &str) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if !cpu.is_empty() {
        m.insert("cpu".to_string(), Quantity(cpu.into()));
    }
    if !memory.is_empty() {
        m.insert("memory".to_string(), Quantity(memory.into()));
    }
    (!m.is_empty()).then_some(m)
}

/// A container with requests `req` and limits `lim`, each `(cpu, memory)` ("" = unset).
fn res(name: &str, req: (&str, &str), lim: (&str, &str)) -> Container {
    Container {
        resources: Some(ResourceRequirements {
            requests: list(req.0, req.1),
            limits: list(lim.0, lim.1),
            ..Default::default()
        }),
        ..ctr(name)
    }
}

fn with_resource(mut c: Container, side: &str, name: &str, value: &str) -> Container {
    let r = c.resources.get_or_insert_with(Default::default);
    let m = if side == "requests" {
        &mut r.requests
    } else {
        &mut r.limits
    };
    m.get_or_insert_with(Default::default)
        .insert(name.into(), Quantity(value.into()));
    c
}

#[test]
fn qos_class_as_upstream() {
    // Upstream TestComputePodQOS (container-level cases), plus defaulted requests, equal
    // quantities in different notations, and resources QoS does not look at.
    let none = ("", "");
    let cases: Vec<(&str, Vec<Container>, Vec<Container>, &str)> = vec![
        (
            "guaranteed",
            vec![res("a", ("100m", "100Mi"), ("100m", "100Mi"))],
            vec![],
            "Guaranteed",
        ),
        (
            "guaranteed-guaranteed",
            vec![
                res("a", ("100m", "100Mi"), ("100m", "100Mi")),
                res("b", ("100m", "100Mi"), ("100m", "100Mi")),
            ],
            vec![],
            "Guaranteed",
        ),
        (
            "best-effort-best-effort",
            vec![res("a", none, none), res("b", none, none)],
            vec![],
            "BestEffort",
        ),
        (
            "best-effort",
            vec![res("a", none, none)],
            vec![],
            "BestEffort",
        ),
        ("no resources at all", vec![ctr("a")], vec![], "BestEffort"),
        (
            "best-effort-burstable",
            vec![res("a", none, none), res("b", ("1", ""), ("2", ""))],
            vec![],
            "Burstable",
        ),
        (
            "best-effort-guaranteed",
            vec![
                res("a", none, none),
                res("b", ("10m", "100Mi"), ("10m", "100Mi")),
            ],
            vec![],
            "Burstable",
        ),
        (
            "burstable-cpu-guaranteed-memory",
            vec![res("a", ("", "100Mi"), ("", "100Mi"))],
            vec![],
            "Burstable",
        ),
        (
            "burstable-no-limits",
            vec![res("a", ("100m", "100Mi"), none)],
            vec![],
            "Burstable",
        ),
        (
            "burstable-guaranteed",
            vec![
                res("a", ("1", "100Mi"), ("2", "100Mi")),
                res("b", ("100m", "100Mi"), ("100m", "100Mi")),
            ],
            vec![],
            "Burstable",
        ),
        (
            "burstable-unbounded-but-requests-match-limits",
            vec![
                res("a", ("100m", "100Mi"), ("200m", "200Mi")),
                res("b", ("100m", "100Mi"), none),
            ],
            vec![],
            "Burstable",
        ),
        (
            "burstable-1",
            vec![res("a", ("10m", "100Mi"), ("100m", "200Mi"))],
            vec![],
            "Burstable",
        ),
        (
            "burstable-2",
            vec![res("a", ("0", "0"), ("100m", "200Mi"))],
            vec![],
            "Burstable",
        ),
        (
            "best-effort-hugepages",
            vec![with_resource(
                with_resource(
                    res("a", ("0", "0"), ("0", "0")),
                    "requests",
                    "hugepages-2Mi",
                    "1Gi",
                ),
                "limits",
                "hugepages-2Mi",
                "1Gi",
            )],
            vec![],
            "BestEffort",
        ),
        (
            "init-container",
            vec![res("a", none, none)],
            vec![res("x", ("10m", "100Mi"), ("100m", "200Mi"))],
            "Burstable",
        ),
        (
            "best-effort init container with a guaranteed app container",
            vec![res("a", ("1", "1Gi"), ("1", "1Gi"))],
            vec![res("x", none, none)],
            "Burstable",
        ),
        (
            "guaranteed init and app containers",
            vec![res("a", ("1", "1Gi"), ("1", "1Gi"))],
            vec![res("x", ("500m", "64Mi"), ("500m", "64Mi"))],
            "Guaranteed",
        ),
        (
            "limits only: requests default to limits",
            vec![res("a", none, ("500m", "256Mi"))],
            vec![],
            "Guaranteed",
        ),
        (
            "cpu request defaulted, memory request lower",
            vec![res("a", ("", "128Mi"), ("500m", "256Mi"))],
            vec![],
            "Burstable",
        ),
        (
            "equal quantities in different notations",
            vec![res("a", ("1", "1Gi"), ("1000m", "1024Mi"))],
            vec![],
            "Guaranteed",
        ),
        (
            "only ephemeral storage",
            vec![with_resource(
                ctr("a"),
                "requests",
                "ephemeral-storage",
                "1Gi",
            )],
            vec![],
            "BestEffort",
        ),
    ];
    for (name, containers, init, want) in cases {
        let p = pod("Always", init, containers);
        assert_eq!(qos_class(&p), want, "{name}");
    }
    let no_spec = Pod::default();
    assert_eq!(qos_class(&no_spec), "BestEffort", "no spec");
}

#[test]
fn attempts_continue_across_a_recreated_sandbox() {
    let status =
        |name: &str, restarts: i32, state: ContainerState, last: Option<ContainerState>| {
            ContainerStatus {
                name: name.into(),
                restart_count: restarts,
                state: Some(state),
                last_state: last,
                ..Default::default()
            }
        };
    let running = ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    };
    let terminated = ContainerState {
        terminated: Some(ContainerStateTerminated::default()),
        ..Default::default()
    };
    let waiting = ContainerState {
        waiting: Some(ContainerStateWaiting::default()),
        ..Default::default()
    };
    let pod = Pod {
        status: Some(PodStatus {
            container_statuses: Some(vec![
                status("never", 0, waiting.clone(), None),
                status("ran", 2, running.clone(), None),
                status("exited", 0, terminated.clone(), None),
                status("backoff", 4, waiting, Some(terminated.clone())),
            ]),
            init_container_statuses: Some(vec![status("init", 1, terminated, None)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    // (name, init, attempt): upstream keeps counting where the last status left off.
    let cases = [
        ("unknown", false, 0),
        ("never", false, 0),
        ("ran", false, 3),
        ("exited", false, 1),
        ("backoff", false, 5),
        ("init", true, 2),
        ("init", false, 0),
    ];
    for (name, init, want) in cases {
        assert_eq!(
            next_attempt_after(&pod, name, init),
            want,
            "{name} init={init}"
        );
    }
    assert_eq!(next_attempt_after(&Pod::default(), "x", false), 0);
}
