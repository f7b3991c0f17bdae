//! Table tests mirroring the cases of upstream's deployment util and sync tests.

use super::*;
use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn s(v: &str) -> IntOrString {
    IntOrString::String(v.into())
}

fn deployment(
    replicas: i32,
    surge: IntOrString,
    unavailable: IntOrString,
    rolling: bool,
) -> Deployment {
    Deployment {
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            strategy: Some(DeploymentStrategy {
                type_: Some(if rolling { "RollingUpdate" } else { "Recreate" }.into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rs(name: &str, replicas: i32, available: i32, created: i64) -> ReplicaSet {
    let mut r = ReplicaSet::default();
    r.metadata.name = Some(name.into());
    r.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    r.spec = Some(ReplicaSetSpec {
        replicas: Some(replicas),
        ..Default::default()
    });
    r.status = Some(ReplicaSetStatus {
        replicas,
        available_replicas: Some(available),
        ..Default::default()
    });
    r
}

#[test]
fn resolve_fenceposts_table() {
    type Case<'a> = (&'a str, &'a str, i32, Result<(i32, i32), ()>);
    let cases: [Case; 7] = [
        ("0%", "0%", 0, Ok((0, 1))),
        ("39%", "39%", 10, Ok((4, 3))),
        ("oops", "39%", 10, Err(())),
        ("55%", "urg", 10, Err(())),
        ("5", "1", 7, Err(())),
        ("25%", "25%", 8, Ok((2, 2))),
        ("25%", "25%", 3, Ok((1, 0))),
    ];
    for (surge, unavail, desired, want) in cases {
        let got = resolve_fenceposts(Some(&s(surge)), Some(&s(unavail)), desired).map_err(|_| ());
        assert_eq!(got, want, "{surge}/{unavail}/{desired}");
    }
    assert_eq!(
        resolve_fenceposts(Some(&IntOrString::Int(1)), Some(&IntOrString::Int(1)), 2),
        Ok((1, 1))
    );
    assert_eq!(resolve_fenceposts(None, None, 10), Ok((0, 1)));
}

#[test]
fn max_unavailable_table() {
    let cases = [
        (10, IntOrString::Int(0), IntOrString::Int(1), true, 1),
        (10, IntOrString::Int(0), IntOrString::Int(0), true, 1),
        (0, IntOrString::Int(0), IntOrString::Int(1), true, 0),
        (10, IntOrString::Int(0), IntOrString::Int(1), false, 0),
        (3, IntOrString::Int(0), IntOrString::Int(10), true, 3),
        (10, s("0%"), s("30%"), true, 3),
    ];
    for (replicas, surge, unavail, rolling, want) in cases {
        let d = deployment(replicas, surge, unavail, rolling);
        assert_eq!(max_unavailable(&d), want, "{replicas}");
    }
}

#[test]
fn new_rs_new_replicas_table() {
    // (name, rolling, deployment replicas, new RS replicas, maxSurge, want); the other RS has 5.
    let cases = [
        ("can not scale up - to newRSReplicas", true, 1, 5, 1, 5),
        ("scale up - to depReplicas", true, 6, 2, 10, 6),
        ("recreate - to depReplicas", false, 3, 1, 1, 3),
    ];
    let rs5 = rs("rs5", 5, 5, 1);
    for (name, rolling, dep, new, surge, want) in cases {
        let d = deployment(dep, IntOrString::Int(surge), IntOrString::Int(1), rolling);
        let new_rs = rs("new", new, 0, 2);
        assert_eq!(new_rs_new_replicas(&d, &[&rs5], &new_rs), want, "{name}");
    }
}

/// upstream `TestScale`'s proportional cases: the old Deployment size is in `max-replicas`.
#[test]
fn proportional_scale_table() {
    // (name, old size, new size, new RS, old RS, want new, want old)
    let cases = [
        ("proportional scaling: 5 -> 10", 5, 10, 2, 3, 4, 6),
        ("proportional scaling: 5 -> 3", 5, 3, 2, 3, 1, 2),
        ("proportional scaling: 9 -> 4", 9, 4, 8, 1, 4, 0),
        // Our own: leftovers go to the first (largest) ReplicaSet; a cap stops the second.
        ("leftover to the largest: 7 -> 10", 7, 10, 2, 3, 3, 7),
        ("cap reached: 13 -> 8", 13, 8, 2, 8, 2, 6),
    ];
    for (name, old_size, size, new_n, old_n, want_new, want_old) in cases {
        let d = deployment(size, IntOrString::Int(0), IntOrString::Int(0), true);
        let mut new_rs = rs("foo-v2", new_n, new_n, 20);
        let mut old_rs = rs("foo-v1", old_n, old_n, 10);
        for r in [&mut new_rs, &mut old_rs] {
            r.metadata.annotations = Some(
                [
                    (MAX_REPLICAS.to_string(), old_size.to_string()),
                    (DESIRED_REPLICAS.to_string(), old_size.to_string()),
                ]
                .into(),
            );
        }
        let (sizes, _) = proportional_sizes(&d, &[&new_rs, &old_rs]);
        let get = |n: &str| sizes.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(
            (get("foo-v2"), get("foo-v1")),
            (want_new, want_old),
            "{name}"
        );
    }
}

#[test]
fn proportion_table() {
    let d = deployment(10, IntOrString::Int(0), IntOrString::Int(0), true);
    let mut r = rs("a", 5, 5, 1);
    r.metadata.annotations = Some([(MAX_REPLICAS.to_string(), "5".to_string())].into());
    // fraction = round(5*10/5) - 5 = 5
    let cases = [(0, 0, 0), (3, 0, 3), (10, 0, 5), (10, 8, 2), (4, 4, 0)];
    for (to_add, added, want) in cases {
        assert_eq!(proportion(&r, &d, to_add, added), want, "{to_add}/{added}");
    }
    let zero = deployment(0, IntOrString::Int(0), IntOrString::Int(0), true);
    assert_eq!(replica_set_fraction(&r, &zero), -5);
}

/// upstream `TestDeploymentController_cleanupUnhealthyReplicas`.
#[test]
fn cleanup_unhealthy_table() {
    // (old RS replicas, available, max cleanup, cleaned up)
    let cases = [(10, 8, 1, 1), (10, 8, 3, 2), (10, 8, 0, 0), (10, 10, 3, 0)];
    for (replicas, available, max, want) in cases {
        let old = [rs("a", 3, 3, 1), rs("b", replicas, available, 2)];
        let refs: Vec<&ReplicaSet> = old.iter().collect();
        let (_, total) = cleanup_unhealthy(&refs, max);
        assert_eq!(total, want, "{replicas}/{available}/{max}");
    }
}

/// upstream `TestDeploymentController_scaleDownOldReplicaSetsForRollingUpdate`.
#[test]
fn scale_down_old_table() {
    // (deployment replicas, maxUnavailable, old replicas, want scaled down)
    // maxSurge is 0 here, so maxUnavailable 0 resolves to 1 (upstream's first case scales 10 -> 9).
    let cases = [
        (10, 0, 10, 1),
        (10, 2, 10, 2),
        (10, 2, 2, 2),
        (10, 2, 0, 0),
        (1, 1, 1, 1),
    ];
    for (replicas, unavail, old_n, want) in cases {
        let d = deployment(
            replicas,
            IntOrString::Int(0),
            IntOrString::Int(unavail),
            true,
        );
        let old = rs("old", old_n, old_n, 1);
        let new = rs("new", replicas - old_n, replicas - old_n, 2);
        let (_, total) = scale_down_old(&d, &[&old, &new], &[&old]);
        assert_eq!(total, want, "{replicas}/{unavail}/{old_n}");
    }
}

#[test]
fn max_scaled_down_respects_new_unavailable() {
    let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0), true);
    let old = rs("old", 3, 3, 1);
    let mut new = rs("new", 1, 0, 2);
    assert_eq!(max_scaled_down(&d, &[&old, &new], Some(&new)), 0);
    new.status.as_mut().unwrap().available_replicas = Some(1);
    assert_eq!(max_scaled_down(&d, &[&old, &new], Some(&new)), 1);
}

#[test]
fn hash_is_stable_and_collision_sensitive() {
    assert_eq!(fnv32a(b""), 0x811c_9dc5);
    assert_eq!(fnv32a(b"a"), 0xe40c_292c);
    assert_eq!(safe_encode("0123"), "4567");
    let t = PodTemplateSpec::default();
    let h = template_hash(&t, None);
    assert_eq!(h, template_hash(&t, None));
    assert_ne!(h, template_hash(&t, Some(1)));
    assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
}

#[test]
fn equal_ignore_hash_table() {
    let mut a = PodTemplateSpec {
        metadata: Some(Default::default()),
        ..Default::default()
    };
    a.metadata.as_mut().unwrap().labels = Some([("app".to_string(), "x".to_string())].into());
    let mut b = a.clone();
    b.metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert(HASH_LABEL.into(), "abc".into());
    assert!(equal_ignore_hash(&a, &b));
    b.metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    assert!(!equal_ignore_hash(&a, &b));
}

#[test]
fn new_rs_annotations_table() {
    let mut d = deployment(3, IntOrString::Int(1), IntOrString::Int(0), true);
    d.metadata.annotations = Some(
        [
            ("team".to_string(), "a".to_string()),
            (REVISION.to_string(), "9".to_string()),
        ]
        .into(),
    );
    // A new ReplicaSet: copied annotations, revision, replicas annotations.
    let mut a = BTreeMap::new();
    assert!(set_new_rs_annotations(&d, &mut a, 1, false));
    assert_eq!(a["team"], "a");
    assert_eq!(a[REVISION], "1");
    assert_eq!(a[DESIRED_REPLICAS], "3");
    assert_eq!(a[MAX_REPLICAS], "4");
    assert!(!a.contains_key(REVISION_HISTORY));
    // Nothing changes the second time.
    assert!(!set_new_rs_annotations(&d, &mut a, 1, true));
    // Rolling back to it: revision 3, history "1", then "1,3" at revision 5.
    assert!(set_new_rs_annotations(&d, &mut a, 3, true));
    assert_eq!(
        (a[REVISION].as_str(), a[REVISION_HISTORY].as_str()),
        ("3", "1")
    );
    assert!(set_new_rs_annotations(&d, &mut a, 5, true));
    assert_eq!(a[REVISION_HISTORY], "1,3");
    // A smaller revision never lowers it.
    assert!(!set_new_rs_annotations(&d, &mut a, 2, true));
    assert_eq!(a[REVISION], "5");
}
