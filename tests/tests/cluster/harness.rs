//! A real `kennel up` for end-to-end tests: its node network in a network namespace made here,
//! its API server on that namespace's loopback (kubectl runs there through `ip netns exec`), a
//! loopback `docker-registry` holding busybox and kubia, a temp data dir. Everything is stopped
//! and removed on drop.
#![allow(dead_code)]

use images::testing::{TestRegistry, TestRegistryOptions};
use kennel_tests::guest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The cluster under test.
pub struct Cluster {
    /// Temp dir (data dir, logs, kubeconfig).
    pub dir: tempfile::TempDir,
    /// Network namespace of the node.
    pub netns: String,
    /// The node's name.
    pub node: String,
    /// The registry, as `127.0.0.1:PORT`.
    pub registry_host: String,
    /// Pod CIDR.
    pub pod_cidr: String,
    /// A token-auth registry holding busybox, as `127.0.0.1:PORT` (user `puller`, password
    /// `token-pw`).
    pub private_host: String,
    registry: TestRegistry,
    private: TestRegistry,
    child: Option<Child>,
}

/// The private registry's only user.
pub static PRIVATE_CREDENTIALS: std::sync::LazyLock<images::auth::Credentials> =
    std::sync::LazyLock::new(|| images::auth::Credentials {
        username: "puller".into(),
        password: "token-pw".into(),
    });

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Cluster {
    /// Starts the registry and `kennel up`, and waits for the API server.
    pub async fn start(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kennel-up-test")
            .tempdir()
            .unwrap();
        let netns = format!("kup-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &netns])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &netns]));
        sh(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
        let registry = TestRegistry::start(TestRegistryOptions::default()).expect("registry");
        kennel_tests::registry::push_test_images(&registry).await;
        let private = TestRegistry::start(TestRegistryOptions {
            token_auth: Some(PRIVATE_CREDENTIALS.clone()),
            ..Default::default()
        })
        .expect("token-auth registry");
        kennel_tests::registry::push_busybox(&private, Some(PRIVATE_CREDENTIALS.clone())).await;
        // Images named `kennel.test/...` come from the plain registry through a mirror.
        std::fs::write(
            dir.path().join("registries.yaml"),
            format!(
                "mirrors:\n  kennel.test:\n    endpoint: [\"http://{}\"]\n",
                registry.host()
            ),
        )
        .unwrap();
        let n = std::process::id() % 200 + 20;
        let mut c = Self {
            dir,
            netns,
            node: "kennel-e2e".into(),
            registry_host: registry.host(),
            pod_cidr: format!("10.216.{n}.0/24"),
            private_host: private.host(),
            registry,
            private,
            child: None,
        };
        c.up();
        c
    }

    /// The data dir.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Starts `kennel up` (again) on the same data dir and waits until the API answers.
    pub fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kennel-up.log"))
            .unwrap();
        let child = Command::new(guest::workspace_bin("kennel"))
            .arg("up")
            .arg("--data-dir")
            .arg(self.data())
            .args([
                "--netns",
                &self.netns,
                "--node-name",
                &self.node,
                "--pod-cidr",
                &self.pod_cidr,
            ])
            .args([
                "--listen",
                "0.0.0.0:6443",
                "--plain-http",
                &self.registry_host,
                "--plain-http",
                &self.private_host,
            ])
            .arg("--registries-config")
            .arg(self.dir.path().join("registries.yaml"))
            .arg("--kernel")
            .arg(guest::vmlinux().expect("guest kernel"))
            .arg("--agent")
            .arg(guest::agent().expect("static kennel-agent"))
            .arg("--cri-bin")
            .arg(guest::workspace_bin("kennel-cri"))
            .arg("--vmm-bin")
            .arg(guest::workspace_bin("kennel-vmm"))
            .arg("--template-cache")
            .arg(guest::template_cache())
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .arg("--no-home-kubeconfig")
            .env("RUST_LOG", "info,kennel_node=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kennel up runs (build it with `cargo build -p kennel`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("kennel up exited ({st}):\n{}", self.diagnostics());
            }
            assert!(
                Instant::now() < deadline,
                "API server never ready:\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl` (`kubectl`, or a versioned build such as `kubectl.1.27` installed beside the
    /// real kubectl) inside the node namespace with the admin kubeconfig.
    pub fn kubectl_bin(&self, bin: &str, args: &[&str]) -> Output {
        let real = std::fs::canonicalize("/usr/bin/kubectl").unwrap_or_else(|_| "kubectl".into());
        let path = real
            .parent()
            .map(|d| d.join(bin))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| bin.into());
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&path)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl` 1.32.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_bin("kubectl", args)
    }

    /// `kubectl`, which must succeed; its stdout.
    pub fn k(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "kubectl", "--kubeconfig"])
            .arg(self.kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A jsonpath of a pod.
    pub fn pod_field(&self, pod: &str, path: &str) -> String {
        let out = self.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `f(jsonpath value)` holds, or fails with diagnostics after `within`.
    pub fn wait_pod(
        &self,
        pod: &str,
        path: &str,
        within: Duration,
        f: impl Fn(&str) -> bool,
    ) -> String {
        let t = Instant::now();
        loop {
            let v = self.pod_field(pod, path);
            if f(&v) {
                eprintln!(
                    "[cluster] {pod} {path} = {v:?} after {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                return v;
            }
            assert!(
                t.elapsed() < within,
                "{pod} {path}: still {v:?} after {within:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// kennel-up's and kennel-cri's logs, pods and events.
    pub fn diagnostics(&self) -> String {
        let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
        let events = self.kubectl(&["get", "events", "-A"]);
        let yaml = self.kubectl(&["get", "pods", "-A", "-o", "yaml"]);
        format!(
            "--- kennel up log (tail)\n{}\n--- kennel-cri log (tail)\n{}\n--- pods\n{}\n--- events\n{}\n--- pods yaml (tail)\n{}",
            tail(&self.dir.path().join("kennel-up.log"), 60),
            tail(&self.data().join("logs/kennel-cri.log"), 60),
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&events.stdout),
            {
                let s = String::from_utf8_lossy(&yaml.stdout).into_owned();
                let v: Vec<&str> = s.lines().collect();
                v[v.len().saturating_sub(120)..].join("\n")
            }
        )
    }

    /// Pids of processes whose command line mentions this cluster's data dir (kennel-cri and
    /// the VMMs, whose sockets live there).
    pub fn pids_mentioning(&self, what: &str) -> Vec<i32> {
        let needle = self.data().display().to_string();
        let mut v = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) && cmd.contains(what) {
                v.push(pid);
            }
        }
        v
    }

    /// `kill -9` of `kennel up` and kennel-cri (the pod VMs keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.pids_mentioning("kennel-cri") {
            // SAFETY: plain kill(2) on a pid read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    /// `kennel down` on the data dir (from the host namespace, as a user runs it); `kennel up`
    /// is reaped. Returns its output.
    pub fn down(&mut self) -> String {
        let out = Command::new(guest::workspace_bin("kennel"))
            .arg("down")
            .arg("--data-dir")
            .arg(self.data())
            .output()
            .expect("kennel down runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kennel down: {text}\n{}",
            self.diagnostics()
        );
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                matches!(c.try_wait(), Ok(Some(_))),
                "kennel up still runs after kennel down"
            );
        }
        text
    }

    /// Output of a command run inside the node namespace.
    pub fn in_netns(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .expect("ip netns exec runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The VMM processes in this cluster's namespace (an exited VMM its parent has not reaped
    /// yet, a zombie, holds no VM and does not count).
    pub fn vmm_pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|pid: &i32| {
                let vmm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "kennel-vmm");
                // Field 3 of /proc/<pid>/stat, after the parenthesised name, is the state.
                let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        == Some("Z")
                });
                vmm && !zombie
            })
            .collect()
    }
}

impl Cluster {
    /// Waits until exactly `n` VMMs run in the namespace (a stopped VM's process may take a
    /// moment to go); fails with the processes and diagnostics after `within`.
    pub fn wait_vmms(&self, n: usize, within: Duration, what: &str) {
        let t = Instant::now();
        loop {
            let pids = self.vmm_pids();
            if pids.len() == n {
                return;
            }
            if t.elapsed() > within {
                let ps = Command::new("ps")
                    .args(["-o", "pid,stat,etime,args", "-p"])
                    .arg(
                        pids.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!(
                    "{what}: {} VMMs, want {n}, after {within:?}:\n{ps}\n{}",
                    pids.len(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.pids_mentioning("kennel-cri") {
            // SAFETY: plain kill(2) on a pid read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let out = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output();
        if let Ok(out) = out {
            for pid in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill(2) on a process inside the namespace this test created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        if std::env::var_os("KENNEL_KEEP_TEST_DIR").is_some() {
            eprintln!("[cluster] keeping {}", self.dir.path().display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
        }
    }
}
