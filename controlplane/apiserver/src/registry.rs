//! The table of served resources: every handler is generic over these entries.

/// Standard verbs of a top-level resource.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version, e.g. `v1`.
    pub version: &'static str,
    /// Plural name used in URLs.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (e.g. `all`).
    pub categories: &'static [&'static str],
    /// Subresources: `status`, `scale`, `binding`, `log`.
    pub subresources: &'static [&'static str],
}

impl ResourceDef {
    /// `apiVersion` of objects, e.g. `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Resource name as used in messages (`deployments.apps`, `pods`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Store key prefix for all objects of this resource.
    pub fn key_prefix(&self) -> String {
        if self.group == "events.k8s.io" {
            // Stored with core/v1 Events (see `convert`).
            return "/registry/core/events/".to_string();
        }
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{g}/{}/", self.plural)
    }

    /// Store key prefix for a namespace (or all objects for `None`).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// Store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    /// The kind whose built-in strategy (defaults, validation, status) applies: this kind for a
    /// built-in resource, `""` for a custom resource (whose kind may repeat a built-in name).
    pub fn strategy_kind(&self) -> &'static str {
        if RESOURCES.iter().any(|r| std::ptr::eq(r, self)) {
            self.kind
        } else {
            ""
        }
    }

    /// Whether the resource is a review (create-only, never stored: access and token reviews).
    pub fn is_review(&self) -> bool {
        matches!(self.group, "authorization.k8s.io" | "authentication.k8s.io")
    }

    /// Whether the resource is a resource-metrics view (`metrics.k8s.io`: read-only, never stored).
    pub fn is_metrics(&self) -> bool {
        self.group == "metrics.k8s.io"
    }

    /// The verbs discovery lists for the resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.is_review() {
            &["create"]
        } else if self.is_metrics() {
            &["get", "list"]
        } else {
            VERBS
        }
    }

    /// Whether the resource has a subresource.
    pub fn has(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $p:expr, $s:expr, $k:expr, $ns:expr, [$($sn:expr),*], [$($c:expr),*], [$($sub:expr),*]) => {
        ResourceDef {
            group: $g, version: $v, plural: $p, singular: $s, kind: $k, namespaced: $ns,
            short_names: &[$($sn),*], categories: &[$($c),*], subresources: &[$($sub),*],
        }
    };
}

/// Every resource this server serves.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceDef] = &[
    res!("", "v1", "namespaces", "namespace", "Namespace", false, ["ns"], [], ["status", "finalize"]),
    res!("", "v1", "pods", "pod", "Pod", true, ["po"], ["all"], ["status", "binding", "log", "exec", "attach", "portforward"]),
    res!("", "v1", "services", "service", "Service", true, ["svc"], ["all"], ["status"]),
    res!("", "v1", "endpoints", "endpoints", "Endpoints", true, ["ep"], [], []),
    res!("", "v1", "configmaps", "configmap", "ConfigMap", true, ["cm"], [], []),
    res!("", "v1", "secrets", "secret", "Secret", true, [], [], []),
    res!("", "v1", "nodes", "node", "Node", false, ["no"], [], ["status"]),
    res!("", "v1", "events", "event", "Event", true, ["ev"], [], []),
    res!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, ["sa"], [], ["token"]),
    res!("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", false, ["pv"], [], ["status"]),
    res!("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", true, ["pvc"], [], ["status"]),
    res!("", "v1", "limitranges", "limitrange", "LimitRange", true, ["limits"], [], []),
    res!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", true, ["quota"], [], ["status"]),
    res!("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", true, ["rc"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "deployments", "deployment", "Deployment", true, ["deploy"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, ["rs"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, ["sts"], ["all"], ["status", "scale"]),
    res!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, ["ds"], ["all"], ["status"]),
    res!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", true, [], [], []),
    res!("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", true, ["hpa"], ["all"], ["status"]),
    res!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, ["pdb"], [], ["status"]),
    res!("batch", "v1", "jobs", "job", "Job", true, [], ["all"], ["status"]),
    res!("batch", "v1", "cronjobs", "cronjob", "CronJob", true, ["cj"], ["all"], ["status"]),
    res!("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, [], [], []),
    res!("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, ["ing"], [], ["status"]),
    res!("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", false, [], [], []),
    res!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, [], [], []),
    res!("events.k8s.io", "v1", "events", "event", "Event", true, [], [], []),
    res!("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, ["crd", "crds"], [], ["status"]),
    res!("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", false, ["sc"], [], []),
    res!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, [], [], []),
    res!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, [], [], []),
    res!("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", false, [], [], []),
    res!("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "selfsubjectrulesreview", "SelfSubjectRulesReview", false, [], [], []),
    res!("authorization.k8s.io", "v1", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview", false, [], [], []),
    res!("authorization.k8s.io", "v1", "localsubjectaccessreviews", "localsubjectaccessreview", "LocalSubjectAccessReview", true, [], [], []),
    res!("authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview", false, [], [], []),
    res!("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", false, [], [], []),
    res!("metrics.k8s.io", "v1beta1", "nodes", "", "NodeMetrics", false, [], [], []),
    res!("metrics.k8s.io", "v1beta1", "pods", "", "PodMetrics", true, [], [], []),
];

/// Kind, group, version and verbs of a subresource of `r`, as discovery lists it.
pub fn subresource_kind(
    r: &ResourceDef,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match sub {
        "scale" => ("Scale", "autoscaling", "v1", &["get", "patch", "update"]),
        "binding" => ("Binding", "", "v1", &["create"]),
        "log" => (r.kind, r.group, r.version, &["get"]),
        "exec" => ("PodExecOptions", "", "v1", &["create", "get"]),
        "attach" => ("PodAttachOptions", "", "v1", &["create", "get"]),
        "portforward" => ("PodPortForwardOptions", "", "v1", &["create", "get"]),
        "token" => ("TokenRequest", "authentication.k8s.io", "v1", &["create"]),
        _ => (r.kind, r.group, r.version, &["get", "patch", "update"]),
    }
}

/// Every served resource: the built-in ones, then the custom resources of CRDs.
pub fn all() -> Vec<&'static ResourceDef> {
    RESOURCES.iter().chain(crate::crd::defs()).collect()
}

/// Looks up a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| crate::crd::find(group, version, plural))
}

/// Looks up a resource by kind and apiVersion.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
        .or_else(|| crate::crd::find_kind(api_version, kind))
}

/// The distinct group/version pairs, core first, in a stable order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in all() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.list_prefix(Some("a")), "/registry/core/pods/a/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "x"), "/registry/core/namespaces/x");
        assert_eq!(
            find_kind("apps/v1", "Deployment").unwrap().qualified(),
            "deployments.apps"
        );
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}
