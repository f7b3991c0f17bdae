//! The namespace controller against the real API server and controller manager, with real
//! kubectl: Terminating with conditions, content removed (pods gracefully), a foreign finalizer
//! holding the namespace, creation refused while terminating, finalize.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, K};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

fn condition(ns: &Namespace, t: &str) -> Option<(String, String)> {
    ns.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion() {
    let c = Cluster::start().await;
    let k = K {
        kubeconfig: c.api.kubeconfig.clone(),
        cache: tempfile::tempdir().unwrap(),
    };
    let nss: Api<Namespace> = Api::all(c.client.clone());

    // Pods (graceful) and a ConfigMap go; the namespace disappears after finalize.
    k.ok(&["create", "namespace", "doomed"]).await;
    let ns = nss.get("doomed").await.unwrap();
    assert_eq!(
        ns.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    k.ok(&["-n", "doomed", "run", "p1", "--image=busybox:1"])
        .await;
    k.ok(&["-n", "doomed", "create", "configmap", "c1"]).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "doomed");
    eventually(T, "p1 running", || async {
        let p = pods.get_opt("p1").await.ok()??;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    k.ok(&["delete", "ns", "doomed", "--wait=false"]).await;
    assert_eq!(
        k.ok(&["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"])
            .await,
        "Terminating"
    );
    let out = common::kubectl(
        &k.kubeconfig,
        k.cache.path(),
        &["-n", "doomed", "create", "configmap", "late"],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "unable to create new content in namespace doomed because it is being terminated"
    ));
    eventually(T, "doomed gone", || async {
        nss.get_opt("doomed").await.ok()?.is_none().then_some(())
    })
    .await;

    // A foreign finalizer keeps the namespace Terminating with NamespaceFinalizersRemaining.
    k.ok(&["create", "namespace", "held"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "held");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "hold", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    k.ok(&["delete", "ns", "held", "--wait=false"]).await;
    let ns = eventually(T, "NamespaceFinalizersRemaining", || async {
        let ns = nss.get("held").await.ok()?;
        (condition(&ns, "NamespaceFinalizersRemaining")?.0 == "True").then_some(ns)
    })
    .await;
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").unwrap().1,
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining").unwrap(),
        (
            "True".to_string(),
            "Some resources are remaining: configmaps. has 1 resource instances".to_string()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure").unwrap(),
        (
            "False".to_string(),
            "All resources successfully discovered".to_string()
        )
    );
    let described = k.ok(&["describe", "ns", "held"]).await;
    assert!(described.contains("Terminating"), "{described}");
    cms.patch(
        "hold",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually(T, "held gone", || async {
        nss.get_opt("held").await.ok()?.is_none().then_some(())
    })
    .await;
}
