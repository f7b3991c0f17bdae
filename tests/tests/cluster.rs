//! End to end: `kennel up` in a network namespace made here, driven by the real kubectl (1.32
//! and 1.27). One cluster, at most two pod VMs alive at once:
//! - the node registers, turns Ready (runtime conditions), holds its Lease;
//! - a pod without `nodeName` is bound by the scheduler and runs busybox and kubia in its own
//!   VM: its init container first,
//!   env from fieldRef/resourceFieldRef/ConfigMap/Secret (a missing ConfigMap first gives
//!   CreateContainerConfigError, then the pod starts once it exists), kubia answers on the pod
//!   IP and through its hostPort on the node address, turns Ready through its httpGet readiness
//!   probe (tcpSocket liveness keeps passing), `kubectl logs` (-c, init container);
//!   `kubectl exec` (exit code, stdin, a tty's size) and `kubectl port-forward` to kubia, with
//!   kubectl 1.32 (WebSocket) and 1.27 (SPDY) (cluster/streaming.rs);
//! - a NodePort Service selects it: its endpoints (named target port), the ClusterIP and the
//!   NodePort from the node (through kennel-proxy's rules and the service-range route), `dig`
//!   of its A and SRV records at the kube-dns ClusterIP (kennel-dns behind the proxy); the
//!   book's external-service (hand-made Endpoints, mirrored into a slice) answers by its
//!   ClusterIP and an ExternalName Service resolves as a CNAME; the book's Ingress routes by
//!   Host on the node's port 80 (404 for other hosts) and shows the node address; a client pod
//!   VM fetches kubia by ClusterIP and by each DNS name (a Service without endpoints refuses
//!   at once; spreading and ClientIP affinity are proven in kennel-proxy's namespace test, a
//!   second kubia VM starved the first on this host) and reaches `kubernetes.default.svc`;
//!   after the kill -9 rerun the
//!   ClusterIP still answers;
//! - a second pod: a container that exits 3 under `restartPolicy: Always` goes to
//!   CrashLoopBackOff with restartCount rising and `kubectl logs --previous`; its sibling with an
//!   unknown image goes ErrImagePull → ImagePullBackOff; a third, whose liveness probe never
//!   passes, is killed and restarted; nothing else is disturbed;
//! - `hostNetwork` is refused (Failed, PodSpecNotSupported) without a VM;
//! - `kill -9` of kennel up and kennel-cri, then a rerun: the same pod (uid, IP, container id,
//!   restartCount) keeps running, adopted;
//! - deletion stops the containers, removes the VM and then the pod object.

#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/streaming.rs"]
mod streaming;

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
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: scratch, mountPath: /scratch}}
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
  volumes:
  - name: cfg
    configMap: {{name: cfg}}
  - name: sec
    # 0400
    secret: {{secretName: sec, defaultMode: 256}}
  - name: scratch
    emptyDir: {{}}
"#
    )
}

/// The kubia Service's ClusterIP, asked for explicitly.
const KUBIA_IP: &str = "10.96.200.80";

/// kubia behind a NodePort Service: its named target port resolves to the pod's 8080.
const KUBIA_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: kubia
spec:
  type: NodePort
  clusterIP: 10.96.200.80
  selector: {app: envpod}
  ports:
  - name: http
    port: 80
    targetPort: http
"#;

/// A pod whose kubia client fetches the kubia Service by address and names, and connects to
/// the API server's Service.
fn client_pod(reg: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: svc-client
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {reg}/kubia:latest
    command: ["/app/kubia", "get", "http://{KUBIA_IP}/", "http://kubia/", "http://kubia.default/",
      "http://kubia.default.svc.cluster.local/", "tcp://kubernetes.default.svc:443",
      "tcp://kubia-none:80"]
"#
    )
}

/// A Service whose selector matches no pod.
const KUBIA_NONE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: kubia-none
spec:
  selector: {app: nothing}
  ports:
  - port: 80
"#;

/// The book's kubia Ingress (listing 5.13), for the built-in controller.
const KUBIA_INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: kubia
spec:
  rules:
  - host: kubia.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: kubia
            port:
              number: 80
"#;

/// The book's external-service (a Service without a selector, Endpoints written by hand) with
/// `ip:8080` as its endpoint, and an ExternalName Service.
fn external_service(ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: external-service
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: external-service
subsets:
- addresses:
  - ip: {ip}
  ports:
  - port: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: external-name
spec:
  type: ExternalName
  externalName: kubia.example.com
  ports:
  - port: 80
"#
    )
}

fn faulty_pod(reg: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: faulty
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  containers:
  - name: crash
    image: {reg}/busybox:latest
    command: ["sh", "-c", "echo crashing-now; exit 3"]
  - name: noimage
    image: {reg}/does-not-exist:v1
  - name: unlive
    image: {reg}/busybox:latest
    command: ["sleep", "100000"]
    livenessProbe:
      tcpSocket: {{port: 9999}}
      periodSeconds: 5
      failureThreshold: 2
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

/// Polls `probe` (its output, and whether it is what is wanted) every `every` until it says
/// yes, failing with the last output and the cluster's diagnostics after `within`.
fn poll_until(
    c: &Cluster,
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> (String, bool),
) {
    let t = std::time::Instant::now();
    loop {
        let (out, done) = probe();
        if done {
            eprintln!("[cluster] {what} after {:.1} s", t.elapsed().as_secs_f64());
            return;
        }
        assert!(
            t.elapsed() < within,
            "{what}: last {out:?}\n{}",
            c.diagnostics()
        );
        std::thread::sleep(every);
    }
}

/// Runs `cmd` inside the node's namespace until its output contains `needle`.
fn netns_until(c: &Cluster, cmd: &[&str], needle: &str) {
    let what = format!("{cmd:?} → {needle:?}");
    poll_until(c, &what, STEP, Duration::from_secs(1), || {
        let out = c.in_netns(cmd);
        let done = out.contains(needle);
        (out, done)
    });
}

/// GETs `url` from inside the node's namespace until the body contains `needle`.
fn curl_until(c: &Cluster, url: &str, needle: &str) {
    let what = format!("GET {url} → {needle:?}");
    poll_until(c, &what, STEP, Duration::from_secs(2), || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &c.netns, "curl", "-s", "-m", "20", url])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        let done = body.contains(needle);
        (
            format!("{body} {}", String::from_utf8_lossy(&out.stderr)),
            done,
        )
    });
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
    // kubectl exec (stdout/stderr/exit code, stdin, a terminal's size) and port-forward to
    // kubia, with kubectl 1.32 (WebSocket) and 1.27 (SPDY).
    streaming::check(&c, "envpod", "main", 8080, "You've hit envpod");
    // Volumes copied into the VM: a configMap, a secret (mode 0400, on the guest's tmpfs) and
    // an emptyDir the container writes.
    let ex = |cmd: &str| c.k(&["exec", "envpod", "-c", "main", "--", "sh", "-c", cmd]);
    assert_eq!(ex("cat /etc/cfg/color").trim(), "blue");
    assert_eq!(
        ex("cat /etc/sec/password; echo; stat -L -c %a /etc/sec/password").trim(),
        "s3cret\n400"
    );
    assert_eq!(ex("echo hi > /scratch/f && cat /scratch/f").trim(), "hi");
    // Resource metrics: `kubectl top` reads metrics.k8s.io, which the API server builds from
    // the node agent's /stats/summary (CRI stats of the guest's cgroups).
    for args in [
        &["top", "pod", "envpod", "--containers"][..],
        &["top", "node", node.as_str()][..],
    ] {
        poll_until(
            &c,
            &format!("kubectl {args:?}"),
            STEP,
            Duration::from_secs(2),
            || {
                let out = c.kubectl(args);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let done = out.status.success() && text.contains("Mi") && text.lines().count() >= 2;
                (
                    format!("{text} {}", String::from_utf8_lossy(&out.stderr)),
                    done,
                )
            },
        );
        eprintln!("[cluster] kubectl {args:?}:\n{}", c.k(args));
    }
    // The pod's ServiceAccount credentials inside the VM: admission projected the token
    // volume, the node agent requested the pod-bound token (TokenRequest), the controller
    // manager published `kube-root-ca.crt`, and all of it was copied into the guest. The test
    // images have no HTTPS client, so the token and CA read inside the VM are used by curl from
    // the node, at the address the pod's environment names (`kubernetes` Service → proxy).
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = ex(&format!("cat {sa}/token"));
    assert_eq!(token.split('.').count(), 3, "a JWT in the VM: {token:?}");
    assert_eq!(ex(&format!("cat {sa}/namespace")).trim(), "default");
    let guest_ca = ex(&format!("cat {sa}/ca.crt"));
    assert!(guest_ca.contains("BEGIN CERTIFICATE"), "{guest_ca}");
    let api_host = ex("echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT");
    let ca_file = c.dir.path().join("guest-ca.crt");
    std::fs::write(&ca_file, &guest_ca).unwrap();
    let list_pods = |c: &Cluster| {
        c.in_netns(&[
            "curl",
            "-s",
            "-m",
            "20",
            "--cacert",
            &ca_file.display().to_string(),
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("https://{}/api/v1/namespaces/default/pods", api_host.trim()),
        ])
    };
    poll_until(
        &c,
        "the pod's token denied by RBAC",
        STEP,
        Duration::from_secs(2),
        || {
            let out = list_pods(&c);
            let done = out.contains(
                r#"User \"system:serviceaccount:default:default\" cannot list resource \"pods\""#,
            );
            (out, done)
        },
    );
    c.k(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    poll_until(
        &c,
        "the pod's token allowed",
        STEP,
        Duration::from_secs(2),
        || {
            let out = list_pods(&c);
            let done = out.contains("\"PodList\"") && out.contains("\"envpod\"");
            (out, done)
        },
    );
    // --- kubia behind a Service: endpoints from the controller, ClusterIP and NodePort through
    // kennel-proxy, from the node (busybox wget segfaulted inside the guest, so a pod as the
    // client is left for later) ---
    c.apply(KUBIA_SERVICE);
    // A Service that selects nothing: refused at once.
    c.apply(KUBIA_NONE);
    let cluster_ip = c.k(&["get", "svc", "kubia", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(cluster_ip, KUBIA_IP);
    let node_port = c.k(&[
        "get",
        "svc",
        "kubia",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    netns_until(
        &c,
        &[
            "kubectl",
            "--kubeconfig",
            &c.kubeconfig().display().to_string(),
            "get",
            "endpoints",
            "kubia",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        ],
        &format!("{ip}:8080"),
    );
    curl_until(&c, &format!("http://{cluster_ip}/"), "You've hit envpod");
    curl_until(
        &c,
        &format!("http://{host_ip}:{node_port}/"),
        "You've hit envpod",
    );
    // Its name through kennel-dns, asked at the kube-dns ClusterIP the pods get (the proxy
    // DNATs it to kennel-dns on the gateway).
    let dns_ip = c.k(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    netns_until(
        &c,
        &[
            "dig",
            &format!("@{dns_ip}"),
            "+short",
            "+time=3",
            "kubia.default.svc.cluster.local",
        ],
        &cluster_ip,
    );
    netns_until(
        &c,
        &[
            "dig",
            &format!("@{dns_ip}"),
            "+short",
            "+time=3",
            "+tcp",
            "SRV",
            "_http._tcp.kubia.default.svc.cluster.local",
        ],
        "80 kubia.default.svc.cluster.local.",
    );
    // The book's external-service: a Service without a selector and hand-made Endpoints (here
    // the pod's address), mirrored into an EndpointSlice that the proxy and DNS serve; and an
    // ExternalName Service as a CNAME.
    c.apply(&external_service(&ip));
    let ext_ip = c.k(&[
        "get",
        "svc",
        "external-service",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    curl_until(&c, &format!("http://{ext_ip}/"), "You've hit envpod");
    netns_until(
        &c,
        &[
            "dig",
            &format!("@{dns_ip}"),
            "+short",
            "+time=3",
            "external-name.default.svc.cluster.local",
        ],
        "kubia.example.com.",
    );
    // The book's Ingress: the built-in controller (default class `kennel`) routes by Host on
    // the node's port 80 straight to the pod, and shows the node's address.
    c.apply(KUBIA_INGRESS);
    netns_until(
        &c,
        &[
            "curl",
            "-s",
            "-m",
            "20",
            "-H",
            "Host: kubia.example.com",
            &format!("http://{host_ip}/"),
        ],
        "You've hit envpod",
    );
    netns_until(
        &c,
        &[
            "curl",
            "-s",
            "-m",
            "20",
            "-H",
            "Host: other.example.com",
            &format!("http://{host_ip}/"),
        ],
        "default backend - 404",
    );
    let address = c.k(&[
        "get",
        "ingress",
        "kubia",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]);
    assert_eq!(address, host_ip, "the Ingress shows the node's address");
    // A pod VM as the client: kubia by its ClusterIP and by each of its DNS names (the guest's
    // resolv.conf search domains), and the API server through `kubernetes.default.svc`.
    c.apply(&client_pod(&reg, &node));
    let targets = [
        format!("GET http://{KUBIA_IP}:80/ -> HTTP/1.1 200 OK | You've hit envpod"),
        "GET http://kubia:80/ -> HTTP/1.1 200 OK | You've hit envpod".to_string(),
        "GET http://kubia.default:80/ -> HTTP/1.1 200 OK | You've hit envpod".to_string(),
        "GET http://kubia.default.svc.cluster.local:80/ -> HTTP/1.1 200 OK | You've hit envpod"
            .to_string(),
        "connected to kubernetes.default.svc:443".to_string(),
        "connect kubia-none:80: ".to_string(),
    ];
    poll_until(
        &c,
        &format!("svc-client reached {targets:?}"),
        FIRST_POD,
        Duration::from_secs(2),
        || {
            let logs =
                String::from_utf8_lossy(&c.kubectl(&["logs", "svc-client"]).stdout).into_owned();
            let done = targets.iter().all(|n| logs.contains(n.as_str()));
            (logs, done)
        },
    );
    let logs = String::from_utf8_lossy(&c.kubectl(&["logs", "svc-client"]).stdout).into_owned();
    let none = logs
        .lines()
        .find(|l| l.starts_with("connect kubia-none:80: "))
        .unwrap();
    assert!(
        none.contains("refused"),
        "no endpoints: refused at once: {none}"
    );
    c.k(&["delete", "pod", "svc-client", "--wait=false"]);

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
    c.apply(&faulty_pod(&reg, &node));
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"crash\")].restartCount",
        FIRST_POD,
        |n| n.parse::<u32>().is_ok_and(|n| n >= 2),
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
    // A liveness probe that never succeeds restarts its container.
    c.wait_pod(
        "faulty",
        ".status.containerStatuses[?(@.name==\"unlive\")].restartCount",
        STEP,
        |n| n.parse::<u32>().is_ok_and(|n| n >= 1),
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
    c.k(&["delete", "pod", "faulty", "--wait=true", "--timeout=180s"]);
    c.wait_vmms(1, Duration::from_secs(60), "the faulty pod's VM is gone");

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
    // The rerun's proxy takes over the rules it left.
    curl_until(&c, &format!("http://{cluster_ip}/"), "You've hit envpod");

    // --- graceful deletion ---
    let t = std::time::Instant::now();
    c.k(&["delete", "pod", "envpod", "--wait=true", "--timeout=180s"]);
    eprintln!(
        "[cluster] envpod deleted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let gone = c.kubectl(&["get", "pod", "envpod"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    c.wait_vmms(0, Duration::from_secs(60), "no VMM left");
}
