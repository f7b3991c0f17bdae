use super::*;
use crate::plugins::testutil::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn store() -> Arc<VolumeStore> {
    let s = VolumeStore::new();
    s.apply_class(obj(json!({"metadata": {"name": "local-disk"},
        "provisioner": "kennel.dev/local-disk", "volumeBindingMode": "WaitForFirstConsumer"})));
    s.apply_class(obj(json!({"metadata": {"name": "static"},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"})));
    s.apply_class(obj(json!({"metadata": {"name": "now"}, "provisioner": "x",
        "volumeBindingMode": "Immediate"})));
    s
}

fn claim(name: &str, class: &str, extra: Value) -> PersistentVolumeClaim {
    let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}});
    if let (Some(a), Some(b)) = (v.as_object_mut(), extra.as_object()) {
        a.extend(b.clone());
    }
    obj(v)
}

fn pv_on(name: &str, node: &str, class: &str) -> PersistentVolume {
    obj(
        json!({"metadata": {"name": name}, "spec": {"storageClassName": class,
        "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
        "status": {"phase": "Available"}}),
    )
}

fn user(claims: &[&str]) -> PodInfo {
    let vols: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    pod(json!({"volumes": vols}))
}

fn cycle(
    s: &Arc<VolumeStore>,
    p: &PodInfo,
    nodes: &[NodeInfo],
) -> (CycleState, Status, Vec<Status>) {
    let ns = HashMap::<String, BTreeMap<String, String>>::new();
    let snap = Snapshot {
        nodes,
        namespaces: &ns,
    };
    let vb = VolumeBinding::new(s.clone(), None);
    let mut st = CycleState::default();
    let pre = vb.pre_filter(&mut st, p, snap);
    let f = nodes.iter().map(|n| vb.filter(&st, p, n)).collect();
    (st, pre, f)
}

#[test]
fn pre_filter_messages() {
    let s = store();
    let nodes = [plain("a")];
    assert_eq!(cycle(&s, &pod(json!({})), &nodes).1.code, Code::Skip);
    let (_, pre, _) = cycle(&s, &user(&["data"]), &nodes);
    assert_eq!(pre.code, Code::UnschedulableAndUnresolvable);
    assert_eq!(
        pre.reasons,
        vec!["persistentvolumeclaim \"data\" not found"]
    );
    s.apply_pvc(claim("data", "now", json!({})));
    let (_, pre, _) = cycle(&s, &user(&["data"]), &nodes);
    assert_eq!(pre.reasons, vec![ERR_UNBOUND_IMMEDIATE]);
    s.apply_pvc(claim("data", "", json!({})));
    assert_eq!(
        cycle(&s, &user(&["data"]), &nodes).1.reasons,
        vec![ERR_UNBOUND_IMMEDIATE]
    );
    s.apply_pvc(claim("data", "local-disk", json!({})));
    assert!(cycle(&s, &user(&["data"]), &nodes).1.is_success());
}

#[test]
fn bound_claims_follow_pv_affinity() {
    let s = store();
    s.apply_pv(pv_on("pv-b", "b", "static"));
    s.apply_pvc(claim(
        "data",
        "static",
        json!({"status": {"phase": "Bound"}}),
    ));
    let mut c = claim("data", "static", json!({"status": {"phase": "Bound"}}));
    c.spec.as_mut().unwrap().volume_name = Some("pv-b".into());
    s.apply_pvc(c);
    let (_, pre, f) = cycle(&s, &user(&["data"]), &[plain("a"), plain("b")]);
    assert!(pre.is_success());
    assert_eq!(f[0].reasons, vec![ERR_NODE_CONFLICT]);
    assert!(f[1].is_success());
    s.remove(crate::volumes::Kind::Pv, "pv-b");
    let (_, _, f) = cycle(&s, &user(&["data"]), &[plain("a")]);
    assert_eq!(f[0].reasons, vec![ERR_PV_NOT_EXIST]);
}

#[test]
fn delayed_claims_static_then_provisioning_and_reserve() {
    let s = store();
    let nodes = [plain("a"), plain("b")];
    // Static class, PV only on b.
    s.apply_pvc(claim("one", "static", json!({})));
    s.apply_pvc(claim("two", "static", json!({})));
    s.apply_pv(pv_on("pv-b", "b", "static"));
    let (st, _, f) = cycle(&s, &user(&["one"]), &nodes);
    assert_eq!(f[0].reasons, vec![ERR_BIND_CONFLICT]);
    assert!(f[1].is_success());
    // Two claims, one PV: neither node fits both.
    let (_, _, f) = cycle(&s, &user(&["one", "two"]), &nodes);
    assert!(f
        .iter()
        .all(|f| f.reasons == vec![ERR_BIND_CONFLICT.to_string()]));
    // Reserve assumes pv-b for "one": another pod's claim "two" no longer finds it.
    let vb = VolumeBinding::new(s.clone(), None);
    let p = user(&["one"]);
    assert!(vb.reserve(&st, &p, "b").is_success());
    let (_, _, f) = cycle(&s, &user(&["two"]), &nodes);
    assert!(!f[1].is_success(), "assumed PV is taken");
    vb.unreserve(&st, &p, "b");
    assert_eq!(s.lock().assumed_count(), 0);
    let (_, _, f) = cycle(&s, &user(&["two"]), &nodes);
    assert!(f[1].is_success(), "unreserve frees it");
    // Provisioning class: every node fits; reserve assumes the selected node, which then
    // pins the claim for the next cycle.
    s.apply_pvc(claim("dyn", "local-disk", json!({})));
    let (st, _, f) = cycle(&s, &user(&["dyn"]), &nodes);
    assert!(f.iter().all(|f| f.is_success()));
    assert_eq!(
        st.read::<PodVolumeClaims>(NAME)
            .unwrap()
            .for_node("a")
            .unwrap()
            .provisions
            .len(),
        1
    );
    assert!(vb.reserve(&st, &p, "a").is_success());
    let (_, _, f) = cycle(&s, &user(&["dyn"]), &nodes);
    assert!(f[0].is_success());
    assert_eq!(f[1].reasons, vec![ERR_BIND_CONFLICT]);
}

#[test]
fn profile_reserve_failure_unreserves_everything() {
    use crate::framework::Profile;
    let s = store();
    let nodes = [plain("b")];
    s.apply_pvc(claim("one", "static", json!({})));
    s.apply_pvc(claim("two", "static", json!({})));
    s.apply_pvc(claim("dyn", "local-disk", json!({})));
    s.apply_pv(pv_on("pv-b", "b", "static"));
    let profile = Profile {
        reserve: vec![Arc::new(VolumeBinding::new(s.clone(), None))],
        ..Default::default()
    };
    // Pod x decides pv-b for "one" (and provisioning for "dyn"); before it reserves, pod y
    // takes pv-b for "two".
    let x = user(&["one", "dyn"]);
    let (sx, _, f) = cycle(&s, &x, &nodes);
    assert!(f[0].is_success());
    let y = user(&["two"]);
    let (sy, _, _) = cycle(&s, &y, &nodes);
    assert_eq!(profile.run_reserve(&sy, &y, "b"), Ok(()));
    assert_eq!(s.lock().assumed_count(), 1);
    assert_eq!(
        profile.run_reserve(&sx, &x, "b"),
        Err("running Reserve plugin \"VolumeBinding\": pv \"pv-b\" was assumed for another claim meanwhile".into())
    );
    assert_eq!(s.lock().assumed_count(), 1, "x holds nothing; y keeps pv-b");
    // Unreserve (a later failure of y) drops y's assumption too.
    profile.run_unreserve(&sy, &y, "b");
    assert_eq!(s.lock().assumed_count(), 0);
}
