//! Pod facts controllers share: active, ready, available (for `minReadySeconds`), and the
//! scale-down victim order of upstream's `ActivePodsWithRanks`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// The annotation that lowers (or raises) a pod's priority as a scale-down victim.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Current time, truncated to the second as the API stores `metav1.Time`.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

/// Not terminal (Succeeded/Failed) and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The `Ready=True` condition's transition time, if the pod is ready.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (upstream `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t.as_second() + i64::from(min_ready_seconds) < now.as_second(),
    }
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// `floor(log2(now - t))` in nanoseconds, -1 for times not in the past.
fn log_rank(t: Timestamp, now: Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

/// A time on upstream's logarithmic scale (`LogarithmicScaleDown`): missing first, then
/// newer buckets first.
fn time_key(t: Option<Timestamp>, now: Timestamp) -> i64 {
    t.map_or(i64::MIN, |t| log_rank(t, now))
}

/// Sort key of a victim (see [`victim_key`]).
type VictimKey = (
    bool,
    u8,
    bool,
    i32,
    std::cmp::Reverse<usize>,
    i64,
    std::cmp::Reverse<i32>,
    i64,
    String,
);

/// The sort key of a scale-down victim, in upstream `ActivePodsWithRanks` precedence:
/// unassigned, Pending < Unknown < Running, not ready, lower deletion cost, more co-located
/// related pods, ready more recently, more restarts, newer, then uid.
///
/// Upstream's comparison is not a total order (within one logarithmic bucket it decides by
/// uid before looking at restarts); Rust's sort needs one, so within a bucket restarts and
/// creation come before the uid here.
fn victim_key(p: &Pod, rank: usize, now: Timestamp) -> VictimKey {
    let ready = is_ready(p);
    (
        !node(p).is_empty(),
        phase_ordinal(p),
        ready,
        deletion_cost(p),
        std::cmp::Reverse(rank),
        if ready {
            time_key(ready_since(p).flatten(), now)
        } else {
            0
        },
        std::cmp::Reverse(max_restarts(p)),
        time_key(p.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Whether pod `a` (with co-location rank `ra`) goes before pod `b` as a scale-down victim.
pub fn victim_less(a: &Pod, ra: usize, b: &Pod, rb: usize, now: Timestamp) -> bool {
    victim_key(a, ra, now) < victim_key(b, rb, now)
}

/// The first `n` of `pods` by victim order; a pod's rank is how many active `related` pods (all
/// pods of the same owner family) share its node.
pub fn victims<'a>(pods: &[&'a Pod], related: &[&Pod], n: usize, now: Timestamp) -> Vec<&'a Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let mut ranked: Vec<_> = pods
        .iter()
        .map(|p| {
            (
                victim_key(p, on_node.get(node(p)).copied().unwrap_or(0), now),
                *p,
            )
        })
        .collect();
    if n < ranked.len() {
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
    }
    ranked.into_iter().take(n).map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[derive(Default)]
    struct P {
        name: &'static str,
        node: &'static str,
        phase: &'static str,
        ready_at: Option<i64>,
        cost: Option<&'static str>,
        restarts: i32,
        created: i64,
    }

    fn mk(p: P) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(p.name.into());
        pod.metadata.uid = Some(p.name.into());
        pod.metadata.creation_timestamp = Some(Time(ts(p.created)));
        if let Some(c) = p.cost {
            pod.metadata.annotations = Some([(DELETION_COST.to_string(), c.to_string())].into());
        }
        pod.spec = Some(PodSpec {
            node_name: (!p.node.is_empty()).then(|| p.node.to_string()),
            ..Default::default()
        });
        pod.status = Some(PodStatus {
            phase: Some(p.phase.into()),
            conditions: p.ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(t))),
                    ..Default::default()
                }]
            }),
            container_statuses: Some(vec![ContainerStatus {
                restart_count: p.restarts,
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn available_needs_min_ready_seconds() {
        let pod = mk(P {
            phase: "Running",
            ready_at: Some(100),
            ..Default::default()
        });
        let cases = [
            (0, 100, true),
            (10, 105, false),
            (10, 110, false),
            (10, 111, true),
        ];
        for (min, now, want) in cases {
            assert_eq!(
                is_available(&pod, min, ts(now)),
                want,
                "min {min} now {now}"
            );
        }
        let pending = mk(P {
            phase: "Pending",
            ..Default::default()
        });
        assert!(!is_available(&pending, 0, ts(1)));
        assert!(!is_ready(&pending));
    }

    /// Pairs (earlier victim, later victim) for each ranking rule, as upstream's
    /// `TestSortingActivePodsWithRanks` orders them.
    #[test]
    fn victim_order_table() {
        let now = ts(1_000_000);
        let running = |name, node, ready_at: Option<i64>| P {
            name,
            node,
            phase: "Running",
            ready_at,
            created: 10,
            ..Default::default()
        };
        let cases: Vec<(&str, P, usize, P, usize)> = vec![
            (
                "unscheduled first",
                P {
                    name: "a",
                    phase: "Pending",
                    ..Default::default()
                },
                0,
                P {
                    name: "b",
                    node: "n",
                    phase: "Pending",
                    ..Default::default()
                },
                0,
            ),
            (
                "pending before unknown",
                P {
                    name: "a",
                    node: "n",
                    phase: "Pending",
                    ..Default::default()
                },
                0,
                P {
                    name: "b",
                    node: "n",
                    phase: "Unknown",
                    ..Default::default()
                },
                0,
            ),
            (
                "unknown before running",
                P {
                    name: "a",
                    node: "n",
                    phase: "Unknown",
                    ..Default::default()
                },
                0,
                running("b", "n", None),
                0,
            ),
            (
                "not ready before ready",
                running("a", "n", None),
                0,
                running("b", "n", Some(5)),
                0,
            ),
            (
                "lower deletion cost first",
                P {
                    cost: Some("-5"),
                    ..running("a", "n", Some(5))
                },
                0,
                P {
                    cost: Some("10"),
                    ..running("b", "n", Some(5))
                },
                0,
            ),
            (
                "doubled up first",
                running("a", "n", Some(5)),
                3,
                running("b", "m", Some(5)),
                1,
            ),
            (
                "ready more recently first",
                running("a", "n", Some(999_990)),
                1,
                running("b", "n", Some(5)),
                1,
            ),
            (
                "more restarts first",
                P {
                    restarts: 3,
                    ..running("a", "n", Some(5))
                },
                1,
                P {
                    restarts: 1,
                    ..running("b", "n", Some(5))
                },
                1,
            ),
            (
                "newer first",
                P {
                    created: 999_000,
                    ..running("a", "n", Some(5))
                },
                1,
                P {
                    created: 1,
                    ..running("b", "n", Some(5))
                },
                1,
            ),
            (
                "same log bucket: uid order",
                P {
                    created: 999_000,
                    ..running("a", "n", Some(5))
                },
                1,
                P {
                    created: 999_001,
                    ..running("b", "n", Some(5))
                },
                1,
            ),
        ];
        for (what, a, ra, b, rb) in cases {
            let (a, b) = (mk(a), mk(b));
            assert!(victim_less(&a, ra, &b, rb, now), "{what}");
            assert!(!victim_less(&b, rb, &a, ra, now), "{what} (reversed)");
        }
    }

    #[test]
    fn victims_rank_by_node() {
        let now = ts(1000);
        let a = mk(P {
            name: "a",
            node: "n1",
            phase: "Running",
            ready_at: Some(5),
            created: 1,
            ..Default::default()
        });
        let b = mk(P {
            name: "b",
            node: "n2",
            phase: "Running",
            ready_at: Some(5),
            created: 1,
            ..Default::default()
        });
        let c = mk(P {
            name: "c",
            node: "n2",
            phase: "Running",
            ready_at: Some(5),
            created: 1,
            ..Default::default()
        });
        let pods = [&a, &b, &c];
        let got: Vec<_> = victims(&pods, &pods, 1, now)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert!(got == ["b"] || got == ["c"], "{got:?}");
        assert_eq!(victims(&pods, &pods, 5, now).len(), 3);
    }

    /// Many pods with mixed facts sort without an ordering violation (a total order).
    #[test]
    fn victim_order_is_total() {
        let now = ts(1_000_000);
        let phases = ["Pending", "Running", "Unknown"];
        let nodes = ["", "n1", "n2"];
        let names: Vec<String> = (0..200).map(|i| format!("p{i:03}")).collect();
        let pods: Vec<Pod> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                mk(P {
                    name: Box::leak(name.clone().into_boxed_str()),
                    node: nodes[i % 3],
                    phase: phases[i % 3],
                    ready_at: (i % 2 == 0).then_some(999_000 - (i as i64 * 7919) % 900_000),
                    cost: (i % 5 == 0).then_some("3"),
                    restarts: (i % 4) as i32,
                    created: (i as i64 * 104_729) % 999_000,
                })
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let v = victims(&refs, &refs, 150, now);
        assert_eq!(v.len(), 150);
        assert!(
            v[0].spec.as_ref().unwrap().node_name.is_none(),
            "unassigned first"
        );
    }

    #[test]
    fn terminal_and_deleting_are_inactive() {
        let mut p = mk(P {
            phase: "Succeeded",
            ..Default::default()
        });
        assert!(!is_active(&p));
        p.status.as_mut().unwrap().phase = Some("Running".into());
        assert!(is_active(&p));
        p.metadata.deletion_timestamp = Some(Time(ts(1)));
        assert!(!is_active(&p));
    }
}
