//! The runc baseline of the CRI benchmark runs for real: busybox (built from the host's static
//! busybox, imported into a temp image store, unpacked into an OCI bundle) as a runc container,
//! create → start → `sleep 3600` running → SIGKILL → delete. Needs root and runc.

use images::progress::Progress;
use images::store::Store;
use kennel_tests::runc::RuncBaseline;

#[test]
fn runc_runs_busybox_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let base = images::testimages::busybox_layer(images::testimages::HOST_BUSYBOX.as_ref())
        .expect("busybox layer (install busybox-static)");
    let archive = dir.path().join("busybox.oci.tar");
    images::testimages::busybox_image(&base)
        .write_oci_archive(&archive, "busybox:latest")
        .unwrap();
    store
        .import_archive(&archive, Some("busybox:latest"), &Progress::hidden())
        .unwrap();

    let work = dir.path().join("runc");
    let baseline = RuncBaseline::prepare(&store, "busybox:latest", &work).unwrap();
    assert!(baseline.bundle().join("rootfs/bin/busybox").is_file());
    assert!(baseline.bundle().join("config.json").is_file());

    let id = format!("kennel-runc-test-{}", std::process::id());
    let times = baseline.run_once(&id).unwrap();
    println!("runc busybox lifecycle:\n{times}");
    let steps: Vec<_> = times.steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, ["create", "start", "stop", "delete"]);
    // deleted: the same id can run again
    let again = baseline.run_once(&id).unwrap();
    println!("second run:\n{again}");

    // a failing step reports runc's message and leaves no container behind
    let bad = RuncBaseline::prepare(&store, "busybox:latest", &dir.path().join("bad")).unwrap();
    std::fs::remove_file(bad.bundle().join("rootfs/bin/busybox")).unwrap();
    let err = bad.run_once(&format!("{id}-bad")).unwrap_err();
    println!("expected failure: {err:#}");
    let list = std::process::Command::new(kennel_tests::runc::RUNC)
        .arg("--root")
        .arg(dir.path().join("bad/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");

    // an image missing from the store is a clear error
    let err = RuncBaseline::prepare(&store, "nope:latest", &dir.path().join("x")).unwrap_err();
    assert!(format!("{err:#}").contains("not in the store"), "{err:#}");
}
