//! The book's `Website` CustomResourceDefinition against the API server, driven by clients we
//! did not write: the real kubectl (1.32 and 1.27) creates the CRD, waits for `Established`,
//! lists websites by plural and short name with the printer columns, sees invalid objects
//! refused with upstream's field causes and unknown fields refused (strict) or pruned, patches
//! the status subresource; a kube-rs `Controller` over the custom resource (a `DynamicObject`)
//! creates a Deployment and a Service per Website with owner references, and deleting the
//! Website removes them; deleting the CRD deletes its objects and stops serving it; a restarted
//! server serves the stored CRD again.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::server::{kubectl_bins, Backend, TestServer};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: websites.extensions.example.com
spec:
  scope: Namespaced
  group: extensions.example.com
  names:
    kind: Website
    singular: website
    plural: websites
    shortNames: [ws]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - {name: Repo, type: string, jsonPath: .spec.gitRepo}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [gitRepo]
            properties:
              gitRepo: {type: string, pattern: "^https?://"}
              replicas: {type: integer, minimum: 1, maximum: 5, default: 1}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

const KUBIA_WEBSITE: &str = r#"apiVersion: extensions.example.com/v1
kind: Website
metadata:
  name: kubia
spec:
  gitRepo: https://github.com/luksa/kubia-website-example.git
"#;

struct K {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl K {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn website_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("extensions.example.com", "v1", "Website"),
        "websites",
    )
}

/// The book's Website controller, shrunk: a Deployment and a Service per Website, owned by it.
async fn reconcile(site: Arc<DynamicObject>, client: Arc<Client>) -> Result<Action, kube::Error> {
    let ns = site.namespace().unwrap_or_else(|| "default".into());
    let name = site.name_any();
    let owner = site
        .controller_owner_ref(&website_resource())
        .expect("owner ref");
    let replicas = site.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let labels = json!({"webserver": name});
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "main", "image": "nginx:alpine"},
                {"name": "git-sync", "image": "openweb/git-sync"}]}}}
    }))
    .unwrap();
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let pp = PatchParams::apply("website-controller").force();
    Api::<Deployment>::namespaced((*client).clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(&deploy))
        .await?;
    Api::<Service>::namespaced((*client).clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(&svc))
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = std::time::Instant::now();
    while !f().await {
        assert!(t.elapsed() < T, "{what} within {T:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn website_crd_with_kubectl_and_a_kube_rs_controller() {
    let server = TestServer::start(Backend::Sqlite).await;
    let bins = kubectl_bins();
    let k = |i: usize| K {
        bin: bins[i].clone(),
        kubeconfig: server.api.kubeconfig.clone(),
        cache: server.dir.path().join(format!("cache-{i}")),
    };
    let (new, old) = (k(0), k(1));
    let crd_name = "websites.extensions.example.com";

    // An invalid CRD is refused with the field named.
    let bad = CRD.replace(
        "name: websites.extensions.example.com",
        "name: sites.extensions.example.com",
    );
    let err = new.fails(&["apply", "-f", "-"], Some(&bad));
    assert!(
        err.contains("metadata.name") && err.contains("spec.names.plural"),
        "{err}"
    );

    new.ok(&["apply", "-f", "-"], Some(CRD));
    new.ok(
        &[
            "wait",
            "--for",
            "condition=established",
            &format!("crd/{crd_name}"),
            "--timeout=30s",
        ],
        None,
    );
    let crds = new.ok(&["get", "crds"], None);
    assert!(crds.contains(crd_name), "{crds}");

    // kube-rs: a controller over the custom resource, running beside kubectl.
    let client = server.client().await;
    let websites: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &website_resource());
    let controller = tokio::spawn(
        Controller::new_with(
            websites.clone(),
            watcher::Config::default(),
            website_resource(),
        )
        .owns(
            Api::<Deployment>::namespaced(client.clone(), "default"),
            watcher::Config::default(),
        )
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(client.clone()),
        )
        .for_each(|_| async {}),
    );

    // Both kubectl versions: create, list with the printer columns (plural, short name,
    // category), defaults applied.
    new.ok(&["apply", "-f", "-"], Some(KUBIA_WEBSITE));
    for kc in [&new, &old] {
        let table = kc.ok(&["get", "websites"], None);
        let header = table.lines().next().unwrap_or_default();
        for col in ["NAME", "REPO", "REPLICAS", "PHASE", "AGE"] {
            assert!(header.contains(col), "{} header: {table}", kc.bin.display());
        }
        let row = table.lines().nth(1).unwrap_or_default();
        assert!(
            row.starts_with("kubia")
                && row.contains("https://github.com/luksa/kubia-website-example.git"),
            "{table}"
        );
        assert!(
            row.split_whitespace().nth(2) == Some("1"),
            "default replicas shown: {table}"
        );
        assert!(kc
            .ok(&["get", "ws", "-o", "name"], None)
            .contains("website.extensions.example.com/kubia"));
    }
    assert!(new
        .ok(&["get", "all"], None)
        .contains("website.extensions.example.com/kubia"));
    let site = new.ok(
        &["get", "website", "kubia", "-o", "jsonpath={.spec.replicas}"],
        None,
    );
    assert_eq!(site, "1", "the schema default is stored");

    // Invalid objects: 422 with upstream's field causes.
    let invalid = "apiVersion: extensions.example.com/v1\nkind: Website\nmetadata: {name: broken}\nspec: {replicas: \"three\"}\n";
    let err = new.fails(&["apply", "-f", "-"], Some(invalid));
    assert!(err.contains("spec.gitRepo: Required value"), "{err}");
    assert!(
        err.contains("spec.replicas in body must be of type integer"),
        "{err}"
    );
    let too_many = "apiVersion: extensions.example.com/v1\nkind: Website\nmetadata: {name: big}\nspec: {gitRepo: \"https://x\", replicas: 9}\n";
    let err = old.fails(&["create", "-f", "-"], Some(too_many));
    assert!(err.contains("should be less than or equal to 5"), "{err}");
    // Unknown fields: refused under kubectl's strict validation, pruned when asked to ignore.
    let unknown = "apiVersion: extensions.example.com/v1\nkind: Website\nmetadata: {name: extra}\nspec: {gitRepo: \"https://x\", colour: red}\n";
    let err = new.fails(&["create", "-f", "-"], Some(unknown));
    assert!(err.contains("unknown field \"spec.colour\""), "{err}");
    new.ok(&["create", "--validate=false", "-f", "-"], Some(unknown));
    let spec = new.ok(&["get", "website", "extra", "-o", "jsonpath={.spec}"], None);
    assert!(!spec.contains("colour"), "pruned: {spec}");

    // The status subresource: only /status changes it.
    new.ok(
        &[
            "patch",
            "website",
            "kubia",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Serving"}}"#,
        ],
        None,
    );
    new.ok(
        &[
            "patch",
            "website",
            "kubia",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Ignored"},"spec":{"replicas":2}}"#,
        ],
        None,
    );
    assert_eq!(
        new.ok(
            &[
                "get",
                "ws",
                "kubia",
                "-o",
                "jsonpath={.status.phase}/{.spec.replicas}"
            ],
            None
        ),
        "Serving/2"
    );

    // The controller made a Deployment and a Service owned by the Website.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    wait_for("the controller's Deployment with 2 replicas", || async {
        deploys
            .get_opt("kubia")
            .await
            .ok()
            .flatten()
            .is_some_and(|d| {
                d.spec.and_then(|s| s.replicas) == Some(2)
                    && d.metadata
                        .owner_references
                        .is_some_and(|o| o[0].kind == "Website")
            })
    })
    .await;
    wait_for("the controller's Service", || async {
        services.get_opt("kubia").await.ok().flatten().is_some()
    })
    .await;

    // Deleting the Website removes it at once (background propagation); what it owns is the
    // garbage collector's to remove (no controller manager runs here: as upstream without one,
    // the dependents stay, naming their absent owner; the cascade itself is proven with the
    // controller manager in controlplane/controllers/tests/gc.rs).
    let ws_uid = websites.get("kubia").await.expect("website").metadata.uid;
    new.ok(&["delete", "website", "kubia"], None);
    assert!(websites.get_opt("kubia").await.expect("get").is_none());
    let d = deploys.get("kubia").await.expect("deployment stays");
    assert_eq!(
        d.metadata.owner_references.expect("owner")[0].uid,
        ws_uid.expect("uid")
    );
    controller.abort();

    // A watch on the custom resource sees a create.
    let mut events = websites
        .watch(&Default::default(), "0")
        .await
        .expect("watch")
        .boxed();
    old.ok(
        &["apply", "-f", "-"],
        Some(&KUBIA_WEBSITE.replace("name: kubia", "name: watched")),
    );
    let seen = tokio::time::timeout(T, async {
        while let Some(Ok(ev)) = events.next().await {
            if let kube::api::WatchEvent::Added(o) = ev {
                if o.name_any() == "watched" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "watch event for the new Website");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_crd_is_served_after_a_restart_and_deleting_it_deletes_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        kennel_apiserver::start(kennel_apiserver::ApiServerConfig::new(dir.path()))
            .await
            .expect("start API server")
    };
    let k = |api: &kennel_apiserver::RunningApiServer| K {
        bin: kubectl_bins()[0].clone(),
        kubeconfig: api.kubeconfig.clone(),
        cache: dir.path().join("cache"),
    };
    // The CRD registry is process-wide and the other test's `kubectl get all` expands the `all`
    // category: this CRD stays out of it, so its deletion here cannot race that listing.
    let crd = CRD
        .replace("extensions.example.com", "restart.example.com")
        .replace("    categories: [all]\n", "");
    let site = KUBIA_WEBSITE.replace("extensions.example.com", "restart.example.com");
    {
        let api = start().await;
        let kc = k(&api);
        kc.ok(&["apply", "-f", "-"], Some(&crd));
        kc.ok(&["apply", "-f", "-"], Some(&site));
        drop(api);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    kennel_apiserver::crd::unregister("websites.restart.example.com");
    let api = start().await;
    let kc = k(&api);
    assert!(kc
        .ok(&["get", "websites.restart.example.com", "-o", "name"], None)
        .contains("kubia"));
    kc.ok(&["delete", "crd", "websites.restart.example.com"], None);
    let err = kc.fails(&["get", "websites.restart.example.com"], None);
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    kc.ok(&["apply", "-f", "-"], Some(&crd));
    kc.ok(
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/websites.restart.example.com",
            "--timeout=30s",
        ],
        None,
    );
    let left = kc.ok(&["get", "websites.restart.example.com", "-o", "name"], None);
    assert!(
        left.trim().is_empty(),
        "the old objects went with the CRD: {left}"
    );
}
