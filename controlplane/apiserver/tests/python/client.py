"""The official Python Kubernetes client (Debian's python3-kubernetes) against kennel's API server.

Usage: client.py KUBECONFIG. Prints one line per check; exits non-zero on the first failure.
"""
import sys
import threading
import time

from kubernetes import client, config, watch


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def main():
    config.load_kube_config(config_file=sys.argv[1])
    v1 = client.CoreV1Api()
    ns = "py"
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="first", labels={"app": "py"}),
                            data={"color": "blue", "empty": ""})
    v1.create_namespaced_config_map(ns, cm)
    listed = v1.list_namespaced_config_map(ns, label_selector="app=py")
    check("list", [c.metadata.name for c in listed.items] == ["first"], listed.items)
    check("empty value kept", listed.items[0].data == {"color": "blue", "empty": ""}, listed.items[0].data)

    # A watch from the list's resourceVersion (the client sends watch=True) sees a later create.
    rv = listed.metadata.resource_version

    def later():
        time.sleep(0.5)
        v1.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="second", labels={"app": "py"})))

    threading.Thread(target=later).start()
    w = watch.Watch()
    seen = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=20):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "second":
            w.stop()
    check("watch", ("ADDED", "second") in seen, seen)

    # Patch and the 404/409 errors as ApiException with the upstream reason.
    v1.patch_namespaced_config_map("first", ns, {"data": {"color": "red"}})
    check("patch", v1.read_namespaced_config_map("first", ns).data["color"] == "red")
    try:
        v1.read_namespaced_config_map("missing", ns)
        check("404", False, "no exception")
    except client.ApiException as e:
        check("404", e.status == 404 and "NotFound" in e.body, (e.status, e.body))
    try:
        v1.create_namespaced_config_map(ns, cm)
        check("409", False, "no exception")
    except client.ApiException as e:
        check("409", e.status == 409 and "AlreadyExists" in e.body, (e.status, e.body))

    # A custom resource through ApiextensionsV1Api and CustomObjectsApi.
    ext = client.ApiextensionsV1Api()
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "websites.py.example.com"},
        "spec": {"group": "py.example.com", "scope": "Namespaced",
                 "names": {"kind": "Website", "plural": "websites", "singular": "website"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "properties": {
                         "gitRepo": {"type": "string"}, "replicas": {"type": "integer", "default": 1}}}}}}}]},
    }
    ext.create_custom_resource_definition(crd)
    got = ext.read_custom_resource_definition("websites.py.example.com")
    conds = {c.type: c.status for c in got.status.conditions}
    check("crd established", conds.get("Established") == "True", conds)
    co = client.CustomObjectsApi()
    co.create_namespaced_custom_object("py.example.com", "v1", ns, "websites", {
        "apiVersion": "py.example.com/v1", "kind": "Website", "metadata": {"name": "kubia"},
        "spec": {"gitRepo": "https://example.com/kubia.git"}})
    site = co.get_namespaced_custom_object("py.example.com", "v1", ns, "websites", "kubia")
    check("custom object defaulted", site["spec"] == {"gitRepo": "https://example.com/kubia.git", "replicas": 1}, site)
    try:
        co.create_namespaced_custom_object("py.example.com", "v1", ns, "websites", {
            "apiVersion": "py.example.com/v1", "kind": "Website", "metadata": {"name": "bad"},
            "spec": {"replicas": "three"}})
        check("custom object invalid", False, "no exception")
    except client.ApiException as e:
        check("custom object invalid", e.status == 422 and "spec.replicas" in e.body, (e.status, e.body))
    print("all ok", flush=True)


if __name__ == "__main__":
    main()
