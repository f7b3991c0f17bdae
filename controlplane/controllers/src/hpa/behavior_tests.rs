//! Table tests mirroring upstream's `horizontal_test.go` (TestScalingWithRules,
//! TestNormalizeDesiredReplicasWithBehavior, TestConvertDesiredReplicasWithRules).

use super::*;

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn ago(s: i64) -> Timestamp {
    now() - SignedDuration::from_secs(s)
}

fn pods(value: i32, period: i32) -> Policy {
    Policy {
        pods: true,
        value,
        period,
    }
}

fn percent(value: i32, period: i32) -> Policy {
    Policy {
        pods: false,
        value,
        period,
    }
}

fn rules(select: Select, policies: Vec<Policy>) -> Rules {
    Rules {
        window: 0,
        select,
        policies,
        tolerance: None,
    }
}

fn ev(change: i32, secs_ago: i64) -> ScaleEvent {
    ScaleEvent {
        change,
        at: ago(secs_ago),
        outdated: false,
    }
}

#[test]
fn defaults_match_upstream() {
    let up = scale_up_rules(None);
    assert_eq!(up.window, 0);
    assert_eq!(up.select, Select::Max);
    assert_eq!(up.policies, vec![pods(4, 15), percent(100, 15)]);
    let down = scale_down_rules(None, 300);
    assert_eq!(down.window, 300);
    assert_eq!(down.policies, vec![percent(100, 15)]);
    // Fields given override one by one.
    let r = HPAScalingRules {
        stabilization_window_seconds: Some(5),
        select_policy: Some("Min".into()),
        ..Default::default()
    };
    let down = scale_down_rules(Some(&r), 300);
    assert_eq!((down.window, down.select), (5, Select::Min));
    assert_eq!(down.policies, vec![percent(100, 15)]);
}

#[test]
fn scaling_with_rules_table() {
    let default_up = scale_up_rules(None);
    let default_down = scale_down_rules(None, 300);
    // (name, up rules, down rules, up events, down events, current, desired, min, max, want, reason)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        Rules,
        Rules,
        Vec<ScaleEvent>,
        Vec<ScaleEvent>,
        i32,
        i32,
        i32,
        i32,
        i32,
        &str,
    )> = vec![
        (
            "scale up, default behavior",
            default_up.clone(),
            default_down.clone(),
            vec![],
            vec![],
            10,
            50,
            1,
            1000,
            20,
            "ScaleUpLimit",
        ),
        (
            "scale up, small: 4 pods beat 100%",
            default_up.clone(),
            default_down.clone(),
            vec![],
            vec![],
            1,
            50,
            1,
            1000,
            5,
            "ScaleUpLimit",
        ),
        (
            "scale up, pods policy larger",
            rules(Select::Max, vec![pods(100, 60), percent(100, 60)]),
            default_down.clone(),
            vec![],
            vec![],
            10,
            500,
            1,
            1000,
            110,
            "ScaleUpLimit",
        ),
        (
            "scale up, Min select",
            rules(Select::Min, vec![pods(4, 60), percent(100, 60)]),
            default_down.clone(),
            vec![],
            vec![],
            10,
            500,
            1,
            1000,
            14,
            "ScaleUpLimit",
        ),
        (
            "scale up, Disabled",
            rules(Select::Disabled, vec![pods(4, 60)]),
            default_down.clone(),
            vec![],
            vec![],
            10,
            500,
            1,
            1000,
            10,
            "ScaleUpLimit",
        ),
        (
            "scale up, max replicas",
            default_up.clone(),
            default_down.clone(),
            vec![],
            vec![],
            10,
            50,
            1,
            15,
            15,
            "TooManyReplicas",
        ),
        (
            "scale up, within range",
            default_up.clone(),
            default_down.clone(),
            vec![],
            vec![],
            10,
            12,
            1,
            1000,
            12,
            "DesiredWithinRange",
        ),
        (
            "scale up, recent events count",
            default_up.clone(),
            default_down.clone(),
            vec![ev(2, 10)],
            vec![],
            12,
            50,
            1,
            1000,
            20,
            "ScaleUpLimit",
        ),
        (
            "scale up, events older than the period don't",
            default_up.clone(),
            default_down.clone(),
            vec![ev(2, 20)],
            vec![],
            12,
            50,
            1,
            1000,
            24,
            "ScaleUpLimit",
        ),
        (
            "scale up, limit already used: stay",
            rules(Select::Max, vec![pods(2, 60)]),
            default_down.clone(),
            vec![ev(4, 10)],
            vec![],
            14,
            50,
            1,
            1000,
            14,
            "ScaleUpLimit",
        ),
        (
            "scale down, default behavior",
            default_up.clone(),
            default_down.clone(),
            vec![],
            vec![],
            100,
            5,
            1,
            1000,
            5,
            "DesiredWithinRange",
        ),
        (
            "scale down, pods policy",
            default_up.clone(),
            rules(Select::Max, vec![pods(5, 60)]),
            vec![],
            vec![],
            100,
            20,
            1,
            1000,
            95,
            "ScaleDownLimit",
        ),
        (
            "scale down, percent policy",
            default_up.clone(),
            rules(Select::Max, vec![percent(20, 60)]),
            vec![],
            vec![],
            100,
            20,
            1,
            1000,
            80,
            "ScaleDownLimit",
        ),
        (
            "scale down, Max select: biggest change",
            default_up.clone(),
            rules(Select::Max, vec![pods(5, 60), percent(20, 60)]),
            vec![],
            vec![],
            100,
            20,
            1,
            1000,
            80,
            "ScaleDownLimit",
        ),
        (
            "scale down, Min select: smallest change",
            default_up.clone(),
            rules(Select::Min, vec![pods(5, 60), percent(20, 60)]),
            vec![],
            vec![],
            100,
            20,
            1,
            1000,
            95,
            "ScaleDownLimit",
        ),
        (
            "scale down, recent events count",
            default_up.clone(),
            rules(Select::Max, vec![pods(10, 60)]),
            vec![],
            vec![ev(10, 10)],
            90,
            50,
            1,
            1000,
            90,
            "ScaleDownLimit",
        ),
        (
            "scale down, Disabled",
            default_up.clone(),
            rules(Select::Disabled, vec![pods(5, 60)]),
            vec![],
            vec![],
            10,
            1,
            1,
            1000,
            10,
            "ScaleDownLimit",
        ),
        (
            "scale down, min replicas",
            default_up.clone(),
            default_down.clone(),
            vec![],
            vec![],
            10,
            0,
            2,
            1000,
            2,
            "TooFewReplicas",
        ),
    ];
    for (name, up, down, ups, downs, current, desired, min, max, want, reason) in cases {
        let h = History {
            recommendations: vec![],
            up: ups,
            down: downs,
        };
        let (got, why) = apply_rates(&h, now(), &up, &down, current, desired, min, max);
        assert_eq!((got, why.0), (want, reason), "{name}");
    }
}

#[test]
fn stabilization_with_behaviors_table() {
    let mut down = scale_down_rules(None, 300);
    let mut up = scale_up_rules(None);
    // Scale-down held at the highest recommendation of the window.
    let mut h = History {
        recommendations: vec![(4, ago(60)), (5, ago(120))],
        ..Default::default()
    };
    let n = normalize_with_behaviors(&mut h, now(), &up, &down, 5, 3, 1, 10);
    assert_eq!((n.replicas, n.able.0), (5, "ScaleDownStabilized"));
    assert_eq!(h.recommendations.len(), 3);
    // Once the window has passed, the lower recommendation wins (and old samples are reused).
    let mut h = History {
        recommendations: vec![(5, ago(400))],
        ..Default::default()
    };
    let n = normalize_with_behaviors(&mut h, now(), &up, &down, 5, 3, 1, 10);
    assert_eq!((n.replicas, n.able.0), (3, "ReadyForNewScale"));
    assert_eq!(h.recommendations, vec![(3, now())]);
    // Scale-up held at the lowest recommendation of the scale-up window.
    up.window = 300;
    down.window = 0;
    let mut h = History {
        recommendations: vec![(2, ago(60)), (3, ago(120))],
        ..Default::default()
    };
    let n = normalize_with_behaviors(&mut h, now(), &up, &down, 1, 5, 1, 10);
    assert_eq!((n.replicas, n.able.0), (2, "ScaleUpStabilized"));
    assert!(!n.limited.0);
}

#[test]
fn legacy_normalization_table() {
    let w = SignedDuration::from_secs(300);
    // (current, desired, min, max, want, reason, limited)
    let cases = [
        (5, 7, 3, 8, 7, "DesiredWithinRange", false),
        (3, 1, 2, 8, 2, "TooFewReplicas", true),
        (1, 8, 1, 8, 4, "ScaleUpLimit", true),
        (20, 1000, 1, 10, 10, "TooManyReplicas", true),
        (3, 6, 1, 100, 6, "DesiredWithinRange", false),
    ];
    for (current, desired, min, max, want, reason, limited) in cases {
        let mut h = History::default();
        let n = normalize_legacy(&mut h, now(), w, current, desired, min, max);
        assert_eq!(
            (n.replicas, n.limited.1, n.limited.0),
            (want, reason, limited),
            "{current}->{desired} [{min},{max}]"
        );
    }
    // Downscale stabilization: the highest recommendation of the last 5 minutes.
    let mut h = History {
        recommendations: vec![(8, ago(60))],
        ..Default::default()
    };
    let n = normalize_legacy(&mut h, now(), w, 8, 3, 1, 10);
    assert_eq!((n.replicas, n.able.0), (8, "ScaleDownStabilized"));
    let mut h = History {
        recommendations: vec![(8, ago(400))],
        ..Default::default()
    };
    let n = normalize_legacy(&mut h, now(), w, 8, 3, 1, 10);
    assert_eq!((n.replicas, n.able.0), (3, "ReadyForNewScale"));
}

#[test]
fn scale_events_reuse_outdated_slots() {
    let up = rules(Select::Max, vec![pods(4, 60)]);
    let down = rules(Select::Max, vec![pods(4, 60)]);
    let mut h = History {
        up: vec![ev(1, 120), ev(1, 30)],
        ..Default::default()
    };
    store_scale_event(&mut h, &up, &down, 3, 5, now());
    assert_eq!(h.up.len(), 2);
    assert_eq!(h.up[0].change, 2);
    assert_eq!(h.up[0].at, now());
    store_scale_event(&mut h, &up, &down, 5, 4, now());
    assert_eq!(h.down, vec![ev(1, 0)]);
}
