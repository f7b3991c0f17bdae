//! Table tests mirroring upstream's `replica_calculator_test.go`.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

const NOW: i64 = 1_700_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

/// Upstream's test settings: cpu initialization 2 min, initial readiness delay 10 s.
fn cfg() -> CalcConfig {
    CalcConfig {
        tolerance: Tolerances::both(0.1),
        cpu_initialization_period: SignedDuration::from_secs(120),
        initial_readiness_delay: SignedDuration::from_secs(10),
    }
}

#[derive(Clone)]
struct P {
    ready: &'static str,
    phase: &'static str,
    /// Seconds before NOW the pod started (and its readiness last changed).
    started_ago: i64,
    request: Option<&'static str>,
    deleting: bool,
}

fn p() -> P {
    P {
        ready: "True",
        phase: "Running",
        started_ago: 180, // upstream's coolCPUCreationTime: 3 minutes ago
        request: Some("1"),
        deleting: false,
    }
}

fn pod(i: usize, spec: &P) -> Pod {
    let t = Timestamp::from_second(NOW - spec.started_ago).unwrap();
    let mut requests = json!({});
    if let Some(r) = spec.request {
        requests = json!({"cpu": r, "memory": r});
    }
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": requests}}]},
        "status": {
            "phase": spec.phase,
            "startTime": t.to_string(),
            "conditions": [{"type": "Ready", "status": spec.ready, "lastTransitionTime": t.to_string()}],
        },
    }))
    .unwrap();
    if spec.deleting {
        pod.metadata.deletion_timestamp = Some(Time(now()));
    }
    pod
}

fn metrics(levels: &[Option<i64>]) -> PodMetricsInfo {
    levels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            l.map(|v| {
                (
                    format!("p{i}"),
                    PodMetric {
                        value: v,
                        timestamp: now(),
                        window: SignedDuration::from_secs(60),
                    },
                )
            })
        })
        .collect()
}

struct Case {
    name: &'static str,
    current: i32,
    pods: Vec<P>,
    levels: Vec<Option<i64>>,
    target: i32,
    want: Result<(i32, i32, i64), CalcError>,
}

fn run(c: &Case) {
    let pods: Vec<Pod> = c.pods.iter().enumerate().map(|(i, s)| pod(i, s)).collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let got = resource_replicas(
        c.current,
        c.target,
        "cpu",
        None,
        &refs,
        metrics(&c.levels),
        &cfg(),
        now(),
    )
    .map(|u| (u.replicas, u.utilization, u.raw));
    assert_eq!(got, c.want, "{}", c.name);
}

fn n(v: i64) -> Option<i64> {
    Some(v)
}

#[test]
fn utilization_table() {
    let unready = P {
        ready: "False",
        ..p()
    };
    let hot = P {
        started_ago: 0,
        ..p()
    };
    let failed = P {
        phase: "Failed",
        ready: "False",
        ..p()
    };
    let pending = P {
        phase: "Pending",
        ready: "False",
        ..p()
    };
    let deleting = P {
        deleting: true,
        ..p()
    };
    let cases = vec![
        Case {
            name: "scale up",
            current: 3,
            pods: vec![p(), p(), p()],
            levels: vec![n(300), n(500), n(700)],
            target: 30,
            want: Ok((5, 50, 500)),
        },
        Case {
            name: "scale up, unready pod counts 0",
            current: 3,
            pods: vec![unready.clone(), p(), p()],
            levels: vec![n(300), n(500), n(700)],
            target: 30,
            want: Ok((4, 60, 600)),
        },
        Case {
            name: "scale up, hot cpu pod counts 0",
            current: 3,
            pods: vec![hot.clone(), p(), p()],
            levels: vec![n(300), n(500), n(700)],
            target: 30,
            want: Ok((4, 60, 600)),
        },
        Case {
            name: "scale up, unready pods flip direction: no scale",
            current: 3,
            pods: vec![p(), unready.clone(), unready.clone()],
            levels: vec![n(400), n(500), n(700)],
            target: 30,
            want: Ok((3, 40, 400)),
        },
        Case {
            name: "scale up ignores failed pods",
            current: 2,
            pods: vec![p(), p(), failed.clone(), failed.clone()],
            levels: vec![n(500), n(700), n(100), n(100)],
            target: 30,
            want: Ok((4, 60, 600)),
        },
        Case {
            name: "scale up ignores deleted pods",
            current: 2,
            pods: vec![p(), p(), deleting.clone(), deleting],
            levels: vec![n(500), n(700), n(100), n(100)],
            target: 30,
            want: Ok((4, 60, 600)),
        },
        Case {
            name: "pending pods are unready",
            current: 3,
            pods: vec![p(), p(), pending],
            levels: vec![n(500), n(700), None],
            target: 30,
            want: Ok((4, 60, 600)),
        },
        Case {
            name: "scale down",
            current: 5,
            pods: vec![p(), p(), p(), p(), p()],
            levels: vec![n(100), n(300), n(500), n(250), n(250)],
            target: 50,
            want: Ok((3, 28, 280)),
        },
        Case {
            name: "scale down ignores unready pods",
            current: 5,
            pods: vec![p(), p(), p(), unready.clone(), unready.clone()],
            levels: vec![n(100), n(300), n(500), n(250), n(250)],
            target: 50,
            want: Ok((2, 30, 300)),
        },
        Case {
            name: "scale down keeps hot cpu pods out",
            current: 5,
            pods: vec![p(), p(), p(), hot.clone(), hot],
            levels: vec![n(100), n(300), n(500), n(1000), n(1000)],
            target: 50,
            want: Ok((2, 30, 300)),
        },
        Case {
            name: "tolerance",
            current: 3,
            pods: vec![p(), p(), p()],
            levels: vec![n(1050), n(1030), n(1020)],
            target: 100,
            want: Ok((3, 103, 1033)),
        },
        Case {
            name: "missing metrics count 100% on scale down",
            current: 4,
            pods: vec![p(), p(), p(), p()],
            levels: vec![n(400), n(95), None, None],
            target: 100,
            want: Ok((3, 24, 247)),
        },
        Case {
            name: "missing metrics, ratio exactly 1: no change",
            current: 2,
            pods: vec![p(), p()],
            levels: vec![n(1000), None],
            target: 100,
            want: Ok((2, 100, 1000)),
        },
        Case {
            name: "missing metrics count 0% on scale up",
            current: 2,
            pods: vec![p(), p()],
            levels: vec![n(2000), None],
            target: 50,
            want: Ok((4, 200, 2000)),
        },
        Case {
            name: "missing metrics flip direction on scale up: no change",
            current: 4,
            pods: vec![p(), p(), p(), p()],
            levels: vec![n(1200), None, None, None],
            target: 100,
            want: Ok((4, 120, 1200)),
        },
        Case {
            name: "missing metrics with unready pods",
            current: 4,
            pods: vec![p(), p(), p(), unready],
            levels: vec![n(100), n(450), None, n(1000)],
            target: 50,
            want: Ok((4, 27, 275)),
        },
        Case {
            name: "no metrics for ready pods",
            current: 1,
            pods: vec![P {
                ready: "False",
                ..p()
            }],
            levels: vec![n(100)],
            target: 50,
            want: Err(CalcError::NoReadyMetrics),
        },
        Case {
            name: "no pods",
            current: 1,
            pods: vec![],
            levels: vec![],
            target: 50,
            want: Err(CalcError::NoPods),
        },
        Case {
            name: "missing request",
            current: 2,
            pods: vec![
                p(),
                P {
                    request: None,
                    ..p()
                },
            ],
            levels: vec![n(100), n(100)],
            target: 50,
            want: Err(CalcError::MissingRequest {
                resource: "cpu".into(),
                container: "c".into(),
                pod: "p1".into(),
            }),
        },
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn requests_and_messages() {
    let pods = [pod(0, &p())];
    let refs: Vec<&Pod> = pods.iter().collect();
    assert_eq!(pod_requests(&refs, Some("c"), "cpu").unwrap()["p0"], 1000);
    // A ContainerResource metric for another container sums nothing.
    assert_eq!(pod_requests(&refs, Some("x"), "cpu").unwrap()["p0"], 0);
    let e = pod_requests(
        &[&pod(
            3,
            &P {
                request: None,
                ..p()
            },
        )],
        None,
        "cpu",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing request for cpu in container c of Pod p3"
    );
}

#[test]
fn memory_ignores_readiness() {
    // Readiness only matters for cpu: an unready pod's memory sample counts.
    let pods = [
        pod(
            0,
            &P {
                ready: "False",
                ..p()
            },
        ),
        pod(1, &p()),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let m = metrics(&[n(1500), n(1500)]);
    let u = resource_replicas(2, 50, "memory", None, &refs, m, &cfg(), now()).unwrap();
    assert_eq!((u.replicas, u.utilization), (6, 150));
}

#[test]
fn average_value_table() {
    let unready = P {
        ready: "False",
        ..p()
    };
    // (current, pods, levels, target milli, want)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(i32, Vec<P>, Vec<Option<i64>>, i64, (i32, i64))> = vec![
        (
            3,
            vec![p(), p(), p()],
            vec![n(300), n(500), n(700)],
            250,
            (6, 500),
        ),
        (
            3,
            vec![p(), p(), p()],
            vec![n(300), n(500), n(700)],
            500,
            (3, 500),
        ),
        (
            5,
            vec![p(); 5],
            vec![n(100), n(300), n(500), n(250), n(250)],
            500,
            (3, 280),
        ),
        (
            3,
            vec![unready.clone(), p(), p()],
            vec![n(300), n(500), n(700)],
            300,
            (4, 600),
        ),
        (
            4,
            vec![p(); 4],
            vec![n(400), n(95), None, None],
            1000,
            (3, 247),
        ),
    ];
    for (i, (current, specs, levels, target, want)) in cases.into_iter().enumerate() {
        let pods: Vec<Pod> = specs.iter().enumerate().map(|(i, s)| pod(i, s)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = raw_resource_replicas(
            current,
            target,
            "cpu",
            &refs,
            metrics(&levels),
            &cfg(),
            now(),
        );
        assert_eq!(got, Ok(want), "case {i}");
    }
}

#[test]
fn per_direction_tolerance() {
    let t = Tolerances {
        scale_down: 0.1,
        scale_up: 0.5,
    };
    assert!(t.within(1.4));
    assert!(!t.within(1.6));
    assert!(t.within(0.95));
    assert!(!t.within(0.85));
}
