//! Identity and access with the real kubectl (1.32, and 1.27 for `auth can-i`): static tokens with
//! groups, client certificates, ServiceAccount tokens from `kubectl create token`, RBAC bindings
//! (`view`, `edit`), 403 texts, `auth can-i` (+ `--list`), `auth whoami`, impersonation,
//! privilege-escalation refusal, the Node authorizer, anonymous requests and the audit log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::kubectl::{token_kubeconfig, K};
use common::server::kubectl_bins;
use kennel_apiserver::pki::client::{cert_kubeconfig, issue_client_cert, ClientIdentity};
use kennel_apiserver::ApiServerConfig;

const TOKENS: &str = "\
jane-token,jane,u-jane,\"dev\"
vic-token,vic,u-vic
node-token,system:node:n1,system:node:n1,\"system:nodes\"
";

/// `GET url` without credentials (Python's urllib, trusting `ca`): `"<code> <body>"`.
fn anonymous_get(ca: &Path, url: &str) -> String {
    const PY: &str = "import ssl,sys,urllib.request,urllib.error\n\
ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
try:\n    r = urllib.request.urlopen(sys.argv[2], context=ctx); print(r.status, r.read().decode())\n\
except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PY])
        .arg(ca)
        .arg(url)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_rbac_and_reviews_with_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let audit = dir.path().join("audit.log");
    let api = kennel_apiserver::start(ApiServerConfig {
        token_file: Some(tokens),
        audit_log: Some(audit.clone()),
        ..ApiServerConfig::new(dir.path().join("data"))
    })
    .await
    .expect("start API server");
    let bins = kubectl_bins();
    let k = |kc: PathBuf| K {
        bin: &bins[0],
        kubeconfig: kc,
        cache: dir.path().join("cache"),
    };
    let admin = k(api.kubeconfig.clone());
    let jane = k(token_kubeconfig(&api, dir.path(), "jane", "jane-token"));
    let vic = k(token_kubeconfig(&api, dir.path(), "vic", "vic-token"));
    let node = k(token_kubeconfig(&api, dir.path(), "node", "node-token"));
    let bogus = k(token_kubeconfig(&api, dir.path(), "bogus", "not-a-token"));

    // Who am I: the admin's client certificate is in system:masters; jane's token carries her group.
    let who: serde_json::Value =
        serde_json::from_str(&admin.ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "kubernetes-admin");
    assert!(who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .contains(&"system:masters".into()));
    let who: serde_json::Value =
        serde_json::from_str(&jane.ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "jane");
    assert_eq!(who["status"]["userInfo"]["uid"], "u-jane");
    let groups = who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .clone();
    assert!(groups.contains(&"dev".into()) && groups.contains(&"system:authenticated".into()));

    // Anonymous (no credentials at all; kubectl would prompt for some, so Python's urllib asks):
    // version and health only; an unknown token is 401.
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &api.ca_pem).unwrap();
    let anon = |path: &str| anonymous_get(&ca, &format!("{}{path}", api.url));
    let version = anon("/version");
    assert!(
        version.starts_with("200 ") && version.contains("gitVersion"),
        "{version}"
    );
    assert_eq!(anon("/healthz"), "200 ok");
    let denied = anon("/api/v1/namespaces/default/pods");
    assert!(
        denied.starts_with("401 ") && denied.contains("Unauthorized"),
        "{denied}"
    );
    assert!(bogus
        .fails(&["get", "--raw", "/version"])
        .contains("Unauthorized"));

    // RBAC: nothing until bound; `view` in one namespace lists but does not delete.
    assert!(!jane.can_i(&["list", "pods"]));
    let denied = jane.fails(&["get", "pods"]);
    assert!(
        denied.contains(r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{denied}"
    );
    admin.ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
        "-n",
        "default",
    ]);
    admin.ok(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=b",
        "-n",
        "default",
    ]);
    assert!(jane.can_i(&["list", "pods"]));
    assert!(jane.ok(&["get", "configmaps"]).contains("c1"));
    assert!(!jane.can_i(&["list", "pods", "-n", "kube-system"]));
    let denied = jane.fails(&["delete", "configmap", "c1"]);
    assert!(
        denied.contains(r#"configmaps "c1" is forbidden: User "jane" cannot delete resource "configmaps" in API group "" in the namespace "default""#),
        "{denied}"
    );
    let denied = jane.fails(&["get", "nodes"]);
    assert!(
        denied.contains(r#"cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{denied}"
    );
    let list = jane.ok(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("configmaps ") && l.contains("[get list watch]")),
        "{list}"
    );
    // 1.27's can-i speaks the same SelfSubjectAccessReview.
    let old = K {
        bin: &bins[1],
        kubeconfig: jane.kubeconfig.clone(),
        cache: dir.path().join("cache-127"),
    };
    assert!(old.can_i(&["list", "pods"]));
    assert!(!old.can_i(&["delete", "pods"]));

    // A group binding: `edit` for group dev in every namespace.
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "dev-edit",
        "--clusterrole=edit",
        "--group=dev",
    ]);
    jane.ok(&[
        "create",
        "configmap",
        "by-jane",
        "--from-literal=x=y",
        "-n",
        "kube-public",
    ]);
    assert!(!vic.can_i(&["create", "configmaps"]));

    // Impersonation: the admin may, jane may not.
    assert!(!admin.can_i(&["delete", "nodes", "--as", "jane"]));
    assert!(admin
        .ok(&["get", "configmaps", "--as", "jane"])
        .contains("c1"));
    assert!(!admin.can_i(&["create", "configmaps", "--as", "vic"]));
    assert!(admin.can_i(&["create", "configmaps", "--as", "vic", "--as-group", "dev"]));
    let denied = jane.fails(&["get", "configmaps", "--as", "vic"]);
    assert!(
        denied.contains(r#"users "vic" is forbidden: User "jane" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{denied}"
    );

    // Escalation: jane may write roles and bindings in default, but not grant what she lacks.
    admin.ok(&[
        "create",
        "role",
        "rbac-writer",
        "--verb=get,list,create,update,delete",
        "--resource=roles,rolebindings",
        "-n",
        "default",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "jane-rbac",
        "--role=rbac-writer",
        "--user=jane",
        "-n",
        "default",
    ]);
    jane.ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get",
        "--resource=configmaps",
        "-n",
        "default",
    ]);
    let denied = jane.fails(&[
        "create",
        "role",
        "node-reader",
        "--verb=list",
        "--resource=nodes",
        "-n",
        "default",
    ]);
    assert!(
        denied.contains("attempting to grant RBAC permissions not currently held"),
        "{denied}"
    );
    let denied = jane.fails(&[
        "create",
        "rolebinding",
        "jane-admin",
        "--clusterrole=cluster-admin",
        "--user=jane",
        "-n",
        "default",
    ]);
    assert!(denied.contains("forbidden"), "{denied}");
    jane.ok(&[
        "create",
        "rolebinding",
        "vic-cm",
        "--role=cm-reader",
        "--user=vic",
        "-n",
        "default",
    ]);
    assert!(vic.can_i(&["get", "configmaps", "-n", "default"]));

    // A client certificate signed by the cluster CA: user = CN, group = O.
    let pki = dir.path().join("data/pki");
    let id = ClientIdentity {
        stem: "alice",
        user: "alice",
        group: Some("dev"),
    };
    let (cert, key) = issue_client_cert(&pki, &id).unwrap();
    let alice_kc = dir.path().join("alice.kubeconfig");
    std::fs::write(
        &alice_kc,
        cert_kubeconfig(&api.url, &api.ca_pem, "alice", &cert, &key),
    )
    .unwrap();
    let alice = k(alice_kc);
    let who: serde_json::Value =
        serde_json::from_str(&alice.ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert!(alice.can_i(&["create", "configmaps", "-n", "kube-public"]));

    // ServiceAccount tokens: TokenRequest via `kubectl create token`, RBAC by SA subject,
    // TokenReview, and the token dies with its ServiceAccount.
    admin.ok(&["create", "serviceaccount", "robot", "-n", "default"]);
    let token = admin.ok(&[
        "create",
        "token",
        "robot",
        "-n",
        "default",
        "--duration=10m",
    ]);
    let robot = k(token_kubeconfig(&api, dir.path(), "robot", token.trim()));
    let who: serde_json::Value =
        serde_json::from_str(&robot.ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:robot"
    );
    assert!(!robot.can_i(&["list", "pods"]));
    admin.ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
        "-n",
        "default",
    ]);
    assert!(robot.can_i(&["list", "pods"]));
    robot.ok(&["get", "pods"]);
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{}"}}}}"#,
        token.trim()
    );
    let out: serde_json::Value =
        serde_json::from_str(&admin.ok_in(&["create", "-f", "-", "-o", "json"], &review)).unwrap();
    assert_eq!(out["status"]["authenticated"], true, "{out}");
    assert_eq!(
        out["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    admin.ok(&["delete", "serviceaccount", "robot", "-n", "default"]);
    assert!(robot.fails(&["get", "pods"]).contains("Unauthorized"));

    // The Node authorizer: a node reads the Secrets of pods bound to it, not others. (No
    // controller manager runs here to create the namespace's `default` ServiceAccount, which
    // ServiceAccount admission requires, so it is made by hand.)
    admin.ok(&["create", "serviceaccount", "default", "-n", "default"]);
    admin.ok(&[
        "create",
        "secret",
        "generic",
        "used",
        "--from-literal=a=b",
        "-n",
        "default",
    ]);
    admin.ok(&[
        "create",
        "secret",
        "generic",
        "other",
        "--from-literal=a=b",
        "-n",
        "default",
    ]);
    admin.ok_in(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-n1","namespace":"default"},
            "spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox",
            "env":[{"name":"A","valueFrom":{"secretKeyRef":{"name":"used","key":"a"}}}]}]}}"#,
    );
    node.ok(&["get", "secret", "used", "-n", "default"]);
    let denied = node.fails(&["get", "secret", "other", "-n", "default"]);
    assert!(denied.contains("forbidden"), "{denied}");
    node.ok(&["get", "pods", "-A"]);

    // The audit log names who did what.
    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["user"]["username"] == "jane"
        && e["verb"] == "delete"
        && e["responseStatus"]["code"] == 403
        && e["objectRef"]["name"] == "c1"));
    assert!(events
        .iter()
        .any(|e| e["user"]["username"] == "kubernetes-admin"
            && e["verb"] == "create"
            && e["objectRef"]["resource"] == "serviceaccounts"));
}
