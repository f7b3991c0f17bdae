//! End to end: `kennel up` in a network namespace made here, driven by the real kubectl (1.32
//! and 1.27). One cluster, at most three pod VMs alive at once:
//! - the node registers, turns Ready (runtime conditions), holds its Lease;
//! - a pod without `nodeName` is bound by the scheduler and runs busybox and kubia in its own
//!   VM: its init container first, env from fieldRef/resourceFieldRef/ConfigMap/Secret (a missing ConfigMap first gives
//!   CreateContainerConfigError, then the pod starts once it exists), kubia answers on the pod
//!   IP and through its hostPort on the node address, turns Ready through its httpGet readiness
//!   probe (tcpSocket liveness keeps passing), `kubectl logs` (-c, init container);
//! - a second pod: a container that exits 3 under `restartPolicy: Always` goes to
//!   CrashLoopBackOff with restartCount rising and `kubectl logs --previous`; its sibling with an
//!   unknown image goes ErrImagePull → ImagePullBackOff; a third, whose liveness probe never
//!   passes, is killed and restarted (`kubectl logs --previous` with 1.27); in the same pod an
//!   image from a token-auth registry through `imagePullSecrets`, one through the registries
//!   file's mirror with postStart and preStop hooks; graceful deletion runs preStop, then
//!   SIGTERM (seen through `kubectl logs -f`), removes the VM and then the pod object; nothing
//!   else is disturbed;
//! - a third pod, alongside: a container over its memory limit is OOMKilled (exit 137) and
//!   backs off (BackOff event);
//! - `hostNetwork` is refused (Failed, PodSpecNotSupported) without a VM;
//! - `kill -9` of kennel up and kennel-cri, then a rerun: the same pod (uid, IP, container id,
//!   restartCount) keeps running, adopted;
//! - `kennel down` stops everything and leaves no VMM, process, link, address, nft table or
//!   mount behind; the store stays.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use std::time::Duration;

/// The first pod's sandbox may boot the template VM (tens of seconds here), then two images
/// are pulled and two containers started in an emulated guest kernel.
const FIRST_POD: Duration = Duration::from_secs(420);
const STEP: Duration = Duration::from_secs(240);

fn env_pod(reg: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: envpod
  labels: {{app: envpod}}
spec:
  # No nodeName: the scheduler binds it.
  initContainers:
  - name: init
    image: {reg}/busybox:latest
    command: ["sh", "-c", "echo init-ran"]
  containers:
  - name: main
    image: {reg}/busybox:latest
    command: ["sh", "-c", "echo POD=$POD_NAME NS=$POD_NS IP=$POD_IP NODE=$NODE MEM=$MEM_MIB CFG=$FROM_CFG SECRET=$FROM_SECRET LATE=$LATE EXPANDED=$(POD_NAME)-x; exec sleep 100000"]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: POD_NS
      valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: NODE
      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
    - name: MEM_MIB
      valueFrom: {{resourceFieldRef: {{containerName: main, resource: requests.memory, divisor: 1Mi}}}}
    - name: FROM_CFG
      valueFrom: {{configMapKeyRef: {{name: cfg, key: color}}}}
    - name: FROM_SECRET
      valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}
    - name: LATE
      valueFrom: {{configMapKeyRef: {{name: late, key: k}}}}
    resources:
      requests: {{memory: 8Mi}}
  - name: kubia
    image: {reg}/kubia:latest
    ports: [{{name: http, containerPort: 8080, hostPort: 18080}}]
    # Guest kernel code is emulated on the CI hosts: kubia answered a request ~10 s after
    # reading it there (measured from its log), so the probes get far more than the 1 s default.
    readinessProbe:
      httpGet: {{path: /, port: http}}
      periodSeconds: 10
      timeoutSeconds: 40
    livenessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 20
      timeoutSeconds: 20
      failureThreshold: 5
"#
    )
}

fn faulty_pod(reg: &str, private: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: faulty
spec:
  nodeName: {node}
  # Room for the preStop exec, which takes tens of seconds in a busy emulated guest; every
  # running container exits on SIGTERM, so deletion need not wait the whole period.
  terminationGracePeriodSeconds: 90
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - name: crash
    image: {reg}/busybox:latest
    command: ["sh", "-c", "echo crashing-now; exit 3"]
  - name: noimage
    image: {reg}/does-not-exist:v1
  - name: unlive
    image: {reg}/busybox:latest
    command: ["sh", "-c", "echo unlive-started; trap 'exit 0' TERM; while true; do sleep 1; done"]
    livenessProbe:
      tcpSocket: {{port: 9999}}
      periodSeconds: 5
      failureThreshold: 2
  - name: private
    image: {private}/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
  - name: hooks
    image: kennel.test/busybox:latest
    command: ["sh", "-c", "trap 'echo got-TERM; exit 0' TERM; while true; do if [ -f /tmp/hook ]; then echo hook: $(cat /tmp/hook); rm /tmp/hook; fi; sleep 1; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo poststart > /tmp/hook"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop > /tmp/hook; sleep 3"]}}
"#
    )
}

/// One container that fills a 64 MiB buffer under a 4 MiB limit: OOMKilled, restarted after
/// a back-off, again and again. In its own VM: the emulated guest kernel faulting pages in
/// keeps that VM's vCPU busy for the ~100 s each kill takes here.
fn oom_pod(reg: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: oom
    image: {reg}/busybox:latest
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    resources:
      limits: {{memory: 4Mi}}
"#
    )
}

fn host_network_pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hostnet
spec:
  nodeName: {node}
  hostNetwork: true
  containers:
  - name: c
    image: busybox
"#
    )
}

/// GETs `url` from inside the node's namespace until the body contains `needle`.
fn curl_until(c: &Cluster, url: &str, needle: &str) {
    let t = std::time::Instant::now();
    loop {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &c.netns, "curl", "-s", "-m", "20", url])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        if body.contains(needle) {
            return;
        }
        assert!(
            t.elapsed() < STEP,
            "{url}: {body:?} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn status_of(c: &Cluster, pod: &str, container: &str, path: &str) -> String {
    c.pod_field(
        pod,
        &format!(".status.containerStatuses[?(@.name==\"{container}\")]{path}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kennel_up_end_to_end() {
    let mut c = Cluster::start("e2e").await;
    let node = c.node.clone();
    let reg = c.registry_host.clone();

    // --- the node ---
    let ready = "{.status.conditions[?(@.type==\"Ready\")].status}";
    let t = std::time::Instant::now();
    loop {
        let out = c.kubectl(&["get", "node", &node, "-o", &format!("jsonpath={ready}")]);
        if String::from_utf8_lossy(&out.stdout) == "True" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "node never Ready\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "[cluster] node Ready after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for bin in ["kubectl", "kubectl.1.27"] {
        let out = c.kubectl_bin(bin, &["get", "nodes"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&node) && text.contains("Ready"),
            "{bin} get nodes: {text}"
        );
    }
    let alloc = c.k(&["get", "node", &node, "-o", "jsonpath={.status.allocatable.memory} {.status.capacity.pods} {.status.nodeInfo.containerRuntimeVersion}"]);
    assert!(
        alloc.contains("110") && alloc.contains("kennel"),
        "node status: {alloc}"
    );
    let lease = c.k(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        &node,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, node);
    let taints = c.k(&["get", "node", &node, "-o", "jsonpath={.spec.taints}"]);
    assert!(
        !taints.contains("not-ready"),
        "Ready node keeps the not-ready taint: {taints}"
    );

    // --- refused without a VM ---
    c.apply(&host_network_pod(&node));
    c.wait_pod("hostnet", ".status.phase", STEP, |p| p == "Failed");
    assert_eq!(
        c.pod_field("hostnet", ".status.reason"),
        "PodSpecNotSupported"
    );
    assert!(c
        .pod_field("hostnet", ".status.message")
        .contains("hostNetwork"));

    // --- a pod with env from everywhere, an init container, kubia ---
    c.k(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    c.k(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cret",
    ]);
    c.apply(&env_pod(&reg));
    let w = c.wait_pod(
        "envpod",
        ".status.containerStatuses[?(@.name==\"main\")].state.waiting.reason",
        FIRST_POD,
        |r| r == "CreateContainerConfigError",
    );
    assert_eq!(w, "CreateContainerConfigError");
    let msg = status_of(&c, "envpod", "main", ".state.waiting.message");
    assert!(
        msg.contains("late"),
        "the message names the missing ConfigMap: {msg}"
    );
    let init = c.pod_field(
        "envpod",
        ".status.initContainerStatuses[0].state.terminated.reason",
    );
    assert_eq!(init, "Completed", "init container ran first");
    c.k(&["create", "configmap", "late", "--from-literal=k=v"]);
    c.wait_pod(
        "envpod",
        ".status.conditions[?(@.type==\"Ready\")].status",
        STEP,
        |s| s == "True",
    );
    assert_eq!(c.pod_field("envpod", ".status.phase"), "Running");
    let ip = c.pod_field("envpod", ".status.podIP");
    let prefix = c.pod_cidr.rsplit_once('.').unwrap().0.to_string();
    assert!(ip.starts_with(&prefix), "pod IP {ip} in {}", c.pod_cidr);
    assert_eq!(c.pod_field("envpod", ".status.qosClass"), "Burstable");
    let cid = status_of(&c, "envpod", "main", ".containerID");
    assert!(cid.starts_with("kennel://"), "{cid}");

    // The environment as the container saw it.
    let want = format!("POD=envpod NS=default IP={ip} NODE={node} MEM=8 CFG=blue SECRET=s3cret LATE=v EXPANDED=envpod-x");
    let t = std::time::Instant::now();
    loop {
        let logs = c.kubectl(&["logs", "envpod", "-c", "main"]);
        let text = String::from_utf8_lossy(&logs.stdout);
        if text.contains(&want) {
            break;
        }
        assert!(
            t.elapsed() < STEP,
            "logs of main: {text:?} {}\nwant {want}\n{}",
            String::from_utf8_lossy(&logs.stderr),
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(c.k(&["logs", "envpod", "-c", "init"]).contains("init-ran"));
    // kubia answers on the pod IP, from the node's namespace, with the pod's hostname, and
    // through its hostPort on the node's address (kennel-cri's DNAT).
    curl_until(&c, &format!("http://{ip}:8080/"), "You've hit envpod");
    let host_ip = c.pod_field("envpod", ".status.hostIP");
    curl_until(&c, &format!("http://{host_ip}:18080/"), "You've hit envpod");
    let describe = c.k(&["describe", "pod", "envpod"]);
    assert!(
        describe.contains(&format!("Successfully assigned default/envpod to {node}")),
        "the scheduler bound envpod:\n{describe}"
    );
    for event in ["Pulling", "Created", "Started"] {
        assert!(
            describe.contains(event),
            "describe shows {event}:\n{describe}"
        );
    }

    // --- crash loop and a bad image, side by side in one VM ---
    c.k(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", c.private_host),
        "--docker-username=puller",
        "--docker-password=token-pw",
    ]);
    c.apply(&faulty_pod(&reg, &c.private_host, &node));
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"crash\")].restartCount",
        FIRST_POD,
        |n| n.parse::<u32>().is_ok_and(|n| n >= 1),
    );
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"crash\")].state.waiting.reason",
        STEP,
        |r| r == "CrashLoopBackOff",
    );
    assert_eq!(
        status_of(&c, "faulty", "crash", ".lastState.terminated.exitCode"),
        "3"
    );
    assert!(c
        .k(&["logs", "faulty", "-c", "crash", "--previous"])
        .contains("crashing-now"));
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"noimage\")].state.waiting.reason",
        STEP,
        |r| r == "ImagePullBackOff" || r == "ErrImagePull",
    );
    assert_eq!(
        c.pod_field("faulty", ".status.phase"),
        "Pending",
        "a container that never started (its image is missing) keeps the pod Pending, as upstream's getPhase"
    );
    // The token-auth registry's image, through the pod's imagePullSecrets.
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"private\")].state.running.startedAt",
        STEP,
        |t| !t.is_empty(),
    );
    // Every container of faulty exists now; the OOM pod runs alongside the checks below.
    c.apply(&oom_pod(&reg, &node));
    // postStart ran (the container prints what its hooks leave in /tmp/hook); its image came
    // through the registries file's mirror for kennel.test.
    let t = std::time::Instant::now();
    while !c
        .k(&["logs", "faulty", "-c", "hooks"])
        .contains("hook: poststart")
    {
        assert!(
            t.elapsed() < STEP,
            "postStart never ran\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // A liveness probe that never succeeds restarts its container; kubectl 1.27 reads the
    // killed run's log.
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"unlive\")].restartCount",
        STEP,
        |n| n.parse::<u32>().is_ok_and(|n| n >= 1),
    );
    let out = c.kubectl_bin(
        "kubectl.1.27",
        &["logs", "faulty", "-c", "unlive", "--previous"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unlive-started"),
        "logs --previous after the liveness restart: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let describe = c.k(&["describe", "pod", "faulty"]);
    assert!(
        describe.contains("Liveness probe failed"),
        "Unhealthy event:\n{describe}"
    );
    assert!(
        describe.contains("failed liveness probe, will be restarted"),
        "Killing event:\n{describe}"
    );
    assert_eq!(
        c.pod_field("envpod", ".status.conditions[?(@.type==\"Ready\")].status"),
        "True",
        "the other pod is undisturbed"
    );
    // Graceful deletion: preStop, then SIGTERM (the hooks container traps it), then the VM,
    // then the pod object. `kubectl logs -f` watches it happen.
    let follow_out = c.dir.path().join("hooks-follow.log");
    let mut follow = std::process::Command::new("ip")
        .args(["netns", "exec", &c.netns, "kubectl", "--kubeconfig"])
        .arg(c.kubeconfig())
        .args(["logs", "-f", "faulty", "-c", "hooks"])
        .stdout(std::fs::File::create(&follow_out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t = std::time::Instant::now();
    c.k(&["delete", "pod", "faulty", "--wait=true", "--timeout=180s"]);
    eprintln!(
        "[cluster] faulty deleted in {:.1} s (grace 90 s)",
        t.elapsed().as_secs_f64()
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let followed = std::fs::read_to_string(&follow_out).unwrap_or_default();
    let (pre, term) = (followed.find("hook: prestop"), followed.find("got-TERM"));
    assert!(
        matches!((pre, term), (Some(p), Some(t)) if p < t),
        "preStop, then SIGTERM, seen by logs -f: {followed:?}"
    );
    c.wait_vmms(
        2,
        Duration::from_secs(60),
        "the faulty pod's VM is gone (envpod's and oom's remain)",
    );
    // A container over its memory limit is OOMKilled and backs off before its restart.
    c.wait_pod(
        "oom",
        ".status.containerStatuses[?(@.name==\"oom\")].lastState.terminated.reason",
        STEP,
        |r| r == "OOMKilled",
    );
    assert_eq!(
        status_of(&c, "oom", "oom", ".lastState.terminated.exitCode"),
        "137"
    );
    let t = std::time::Instant::now();
    loop {
        let out = c.kubectl_bin("kubectl.1.27", &["describe", "pod", "oom"]);
        let describe = String::from_utf8_lossy(&out.stdout).into_owned();
        if describe.contains("Back-off restarting failed container oom") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "BackOff event of the OOMKilled container:\n{describe}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    c.k(&["delete", "pod", "oom", "--wait=true", "--timeout=180s"]);
    c.wait_vmms(1, Duration::from_secs(60), "the OOM pod's VM is gone");

    // --- kill -9 and a rerun adopt the running pod ---
    let before = (
        c.pod_field("envpod", ".metadata.uid"),
        c.pod_field("envpod", ".status.podIP"),
        status_of(&c, "envpod", "main", ".containerID"),
        status_of(&c, "envpod", "main", ".restartCount"),
    );
    let vmms = c.vmm_pids();
    c.kill9();
    assert_eq!(
        c.vmm_pids(),
        vmms,
        "pod VMs outlive kill -9 of the control plane"
    );
    c.up();
    tokio::time::sleep(Duration::from_secs(15)).await;
    c.wait_pod(
        "envpod",
        ".status.conditions[?(@.type==\"Ready\")].status",
        STEP,
        |s| s == "True",
    );
    let after = (
        c.pod_field("envpod", ".metadata.uid"),
        c.pod_field("envpod", ".status.podIP"),
        status_of(&c, "envpod", "main", ".containerID"),
        status_of(&c, "envpod", "main", ".restartCount"),
    );
    assert_eq!(
        before, after,
        "same uid, IP, container and restartCount after the rerun"
    );
    assert_eq!(c.vmm_pids(), vmms, "no VM restarted");

    // --- kennel down: the control plane, every pod VM and the node network go ---
    let said = c.down();
    eprintln!("[cluster] kennel down: {}", said.trim());
    c.wait_vmms(0, Duration::from_secs(30), "no VMM after kennel down");
    assert!(
        c.pids_mentioning("").is_empty(),
        "no process of this cluster is left: {:?}",
        c.pids_mentioning("")
    );
    let links = c.in_netns(&["ip", "-o", "link"]);
    assert!(
        links.lines().all(|l| l.contains(": lo:")),
        "only lo is left in the node namespace: {links}"
    );
    let addrs = c.in_netns(&["ip", "-o", "-4", "addr"]);
    assert!(
        addrs.lines().all(|l| l.contains(" lo ")),
        "no pod network address is left: {addrs}"
    );
    let rules = c.in_netns(&["nft", "list", "ruleset"]);
    assert!(
        !rules.contains("kennel"),
        "no kennel nft table is left: {rules}"
    );
    let data = c.data().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&data),
        "nothing is mounted under {data}: {mounts}"
    );
    // The objects stay for the next kennel up.
    let db = std::process::Command::new("find")
        .arg(c.data())
        .args(["-name", "kennel.db"])
        .output()
        .unwrap();
    assert!(!db.stdout.is_empty(), "the store survives kennel down");
}
