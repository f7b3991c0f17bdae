//! The Endpoints and EndpointSlice controllers against the real API server, with the test
//! kubelet fixture giving pods IPs and readiness: a Service's slice and Endpoints follow its
//! pods (named target port resolved, readiness flips, deletions), real kubectl shows them, and
//! both go with the Service.

mod common;

use std::time::Duration;

use common::{eventually, kubectl, Cluster};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn web_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "kubia",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .unwrap()
}

/// (ready addresses, not-ready addresses, ports) of the Service's managed slices.
async fn slice_view(api: &Api<EndpointSlice>) -> (Vec<String>, Vec<String>, Vec<i32>) {
    let list = api
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    let (mut ready, mut not, mut ports) = (vec![], vec![], vec![]);
    for s in list.items {
        for e in &s.endpoints {
            let r = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            if r { &mut ready } else { &mut not }.extend(e.addresses.clone());
        }
        ports.extend(s.ports.iter().flatten().filter_map(|p| p.port));
    }
    ready.sort();
    not.sort();
    (ready, not, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_pods_of_a_service() {
    let c = Cluster::start().await;
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    for n in ["web-a", "web-b", "web-c"] {
        pods.create(&PostParams::default(), &web_pod(n))
            .await
            .unwrap();
    }
    let ready = eventually(T, "three ready endpoints on 8080", || async {
        let (r, n, p) = slice_view(&slices).await;
        (r.len() == 3 && n.is_empty() && p == vec![8080]).then_some(r)
    })
    .await;
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let s = &list.items[0];
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["tier"], "front", "the Service's labels are copied");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
    assert!(s
        .endpoints
        .iter()
        .all(|e| e.node_name.as_deref() == Some("fake-node")
            && e.target_ref.as_ref().and_then(|r| r.kind.as_deref()) == Some("Pod")));
    let e = eventually(T, "the Endpoints object", || async {
        eps.get_opt("web").await.unwrap()
    })
    .await;
    let subsets = e.subsets.unwrap();
    let mut ips: Vec<String> = subsets[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.ip.clone())
        .collect();
    ips.sort();
    assert_eq!(ips, ready);

    // Readiness lost: the endpoint stays, not ready; Endpoints moves it to notReadyAddresses.
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods.patch_status("web-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(T, "web-a not ready", || async {
        let (r, n, _) = slice_view(&slices).await;
        (r.len() == 2 && n.len() == 1).then_some(())
    })
    .await;
    eventually(T, "Endpoints notReadyAddresses", || async {
        let e = eps.get("web").await.unwrap();
        let s = e.subsets.unwrap_or_default();
        let not = s
            .first()
            .and_then(|s| s.not_ready_addresses.clone())
            .unwrap_or_default();
        (not.len() == 1).then_some(())
    })
    .await;

    // Real kubectl shows them.
    let cache = c.dir.path().join("kubectl-cache");
    let out = kubectl(&c.api.kubeconfig, &cache, &["get", "endpoints", "web"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(":8080"),
        "kubectl get endpoints: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &c.api.kubeconfig,
        &cache,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IPv4") && text.contains("8080"),
        "kubectl get endpointslices: {text}"
    );
    let out = kubectl(&c.api.kubeconfig, &cache, &["describe", "svc", "web"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Endpoints:") && text.contains(":8080"),
        "kubectl describe svc: {text}"
    );

    // A deleted pod leaves.
    pods.delete("web-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually(T, "web-b gone from the slice", || async {
        let (r, n, _) = slice_view(&slices).await;
        (r.len() + n.len() == 2).then_some(())
    })
    .await;

    // The Service goes, and its slices and Endpoints with it.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(T, "slices and Endpoints deleted", || async {
        let (r, n, _) = slice_view(&slices).await;
        (r.is_empty() && n.is_empty() && eps.get_opt("web").await.unwrap().is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectorless_services_keep_their_hand_made_endpoints() {
    let c = Cluster::start().await;
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "external-service"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let e: Endpoints = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external-service"},
        "subsets": [{"addresses": [{"ip": "11.11.11.11"}, {"ip": "22.22.22.22"}], "ports": [{"port": 80}]}],
    }))
    .unwrap();
    eps.create(&PostParams::default(), &e).await.unwrap();
    // Touch the Service so the controller surely looked at it, then check nothing was changed.
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    svcs.patch(
        "external-service",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = eps.get("external-service").await.unwrap();
    assert_eq!(
        got.subsets, e.subsets,
        "the book's external-service endpoints are left alone"
    );

    // They are mirrored into an EndpointSlice, as real kubectl shows, and followed.
    let cache = tempfile::tempdir().unwrap();
    let mirrored = |want: Vec<&'static str>| {
        let (kc, cache) = (c.api.kubeconfig.clone(), cache.path().to_path_buf());
        async move {
            eventually(T, "mirrored slice", || {
                let (kc, cache, want) = (kc.clone(), cache.clone(), want.clone());
                async move {
                    let out = kubectl(
                        &kc,
                        &cache,
                        &[
                            "get",
                            "endpointslices",
                            "-o",
                            "json",
                            "-l",
                            "kubernetes.io/service-name=external-service",
                        ],
                    )
                    .await;
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    let items = v["items"].as_array()?.clone();
                    let mut ips: Vec<String> = items
                        .iter()
                        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
                        .collect();
                    ips.sort();
                    let managed = items.iter().all(|s| {
                        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                            == "endpointslicemirroring-controller.k8s.io"
                            && s["metadata"]["ownerReferences"][0]["kind"] == "Endpoints"
                            && s["ports"][0]["port"] == 80
                    });
                    (managed && ips == want).then_some(())
                }
            })
            .await
        }
    };
    mirrored(vec!["11.11.11.11", "22.22.22.22"]).await;
    let patch = json!({"subsets": [{"addresses": [{"ip": "22.22.22.22"}, {"ip": "33.33.33.33"}], "ports": [{"port": 80}]}]});
    eps.patch(
        "external-service",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    mirrored(vec!["22.22.22.22", "33.33.33.33"]).await;
    eps.delete("external-service", &DeleteParams::default())
        .await
        .unwrap();
    mirrored(vec![]).await;
    // Nothing else was mirrored (skip-mirror is covered by the unit tests: this API server
    // has no Endpoints for its `kubernetes` Service; `kennel up` writes them labelled).
    let all: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let list = all
        .list(&ListParams::default().labels(
            "endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io",
        ))
        .await
        .unwrap();
    assert!(list.items.is_empty(), "{:?}", list.items);
}
