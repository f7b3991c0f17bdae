//! The bootstrap policy's objects (upstream's `bootstrappolicy/policy.go` and
//! `controller_policy.go`, as far as kennel's components need them): the default ClusterRoles
//! (with `admin`/`edit`/`view` aggregated from the `system:aggregate-to-*` roles) and
//! ClusterRoleBindings.
//!
//! kennel runs its controller manager as one identity, so `system:kube-controller-manager` holds
//! what all its controllers need (upstream splits this into per-controller roles used with
//! `--use-service-account-credentials`).

use super::rbac::PolicyRule;

const READ: &[&str] = &["get", "list", "watch"];

/// The user of `kennel.dev/local-disk`, the node's provisioner of disk images.
pub const LOCAL_PROVISIONER: &str = "system:kennel:local-provisioner";
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const RW: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];
const EVENTS_WRITE: &[&str] = &["create", "update", "patch"];

/// One bootstrap ClusterRole.
#[derive(Debug, Clone)]
pub struct BootstrapRole {
    /// Name.
    pub name: &'static str,
    /// Labels beyond `kubernetes.io/bootstrapping`.
    pub labels: Vec<(&'static str, &'static str)>,
    /// Rules (for aggregated roles: computed from the aggregated ones).
    pub rules: Vec<PolicyRule>,
    /// `aggregationRule.clusterRoleSelectors[].matchLabels` (one label each).
    pub aggregate_from: Vec<(&'static str, &'static str)>,
}

/// A plain bootstrap ClusterRole.
pub fn role(name: &'static str, rules: Vec<PolicyRule>) -> BootstrapRole {
    BootstrapRole {
        name,
        labels: Vec::new(),
        rules,
        aggregate_from: Vec::new(),
    }
}

fn labelled(name: &'static str, label: &'static str, rules: Vec<PolicyRule>) -> BootstrapRole {
    BootstrapRole {
        labels: vec![(label, "true")],
        ..role(name, rules)
    }
}

fn aggregated(
    name: &'static str,
    from: &'static str,
    label: Option<&'static str>,
) -> BootstrapRole {
    BootstrapRole {
        name,
        labels: label.map(|l| vec![(l, "true")]).unwrap_or_default(),
        rules: Vec::new(),
        aggregate_from: vec![(from, "true")],
    }
}

/// Label of the roles aggregated into `admin`.
pub const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
/// Label of the roles aggregated into `edit`.
pub const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
/// Label of the roles aggregated into `view`.
pub const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The bootstrap ClusterRoles, with the aggregated roles' rules filled in.
pub fn cluster_roles() -> Vec<BootstrapRole> {
    let r = PolicyRule::new;
    let mut roles = vec![
        role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), PolicyRule::urls(&["*"], &["*"])],
        ),
        aggregated("admin", TO_ADMIN, None),
        aggregated("edit", TO_EDIT, Some(TO_ADMIN)),
        aggregated("view", TO_VIEW, Some(TO_EDIT)),
        labelled(
            "system:aggregate-to-admin",
            TO_ADMIN,
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(
                    RW,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
            ],
        ),
        labelled(
            "system:aggregate-to-edit",
            TO_EDIT,
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                r(&["create"], &[""], &["pods/eviction"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                        "events",
                    ],
                ),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["jobs", "cronjobs"]),
                r(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "ingresses",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(
                    WRITE,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses"],
                ),
            ],
        ),
        labelled(
            "system:aggregate-to-view",
            TO_VIEW,
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                r(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                r(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
                r(READ, &["metrics.k8s.io"], &["pods", "nodes"]),
            ],
        ),
        role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:discovery",
            vec![PolicyRule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![PolicyRule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role("system:node", super::node::node_rules()),
        role(
            "system:node-proxier",
            vec![
                r(&["list", "watch"], &[""], &["services", "endpoints"]),
                r(READ, &[""], &["nodes"]),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                r(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
            ],
        ),
        // Upstream's role for the scheduler's VolumeBinding plugin.
        role(
            "system:volume-scheduler",
            vec![
                r(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
            ],
        ),
        // kennel's per-node provisioner of disk images (`kennel.dev/local-disk`).
        role(
            "system:kennel:local-provisioner",
            vec![
                r(
                    &["get", "list", "watch", "create", "delete"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "watch", "update", "patch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(&["create", "patch"], &["", "events.k8s.io"], &["events"]),
                r(&["get"], &[""], &["nodes"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            vec![
                r(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                r(&["get", "update"], &["coordination.k8s.io"], &["leases"])
                    .names(&["kube-scheduler"]),
                r(READ, &[""], &["nodes"]),
                r(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                r(&["create"], &[""], &["pods/binding", "bindings"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(READ, &[""], &["services", "replicationcontrollers"]),
                r(READ, &["apps", "extensions"], &["replicasets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                        "storageclasses",
                    ],
                ),
                r(READ, &[""], &["namespaces", "configmaps"]),
                // metrics-server's `system:aggregated-metrics-reader`, aggregated to view.
                r(READ, &["metrics.k8s.io"], &["pods", "nodes"]),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                r(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                r(&["get", "update"], &["coordination.k8s.io"], &["leases"])
                    .names(&["kube-controller-manager"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(
                    RW,
                    &[""],
                    &[
                        "pods",
                        "pods/status",
                        "pods/binding",
                        "pods/eviction",
                        "replicationcontrollers",
                        "replicationcontrollers/status",
                        "replicationcontrollers/scale",
                        "services",
                        "services/status",
                        "endpoints",
                        "serviceaccounts",
                        "serviceaccounts/token",
                        "secrets",
                        "configmaps",
                        "namespaces",
                        "namespaces/status",
                        "namespaces/finalize",
                        "nodes",
                        "nodes/status",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "persistentvolumes",
                        "persistentvolumes/status",
                        "resourcequotas",
                        "resourcequotas/status",
                        "limitranges",
                    ],
                ),
                r(
                    RW,
                    &["apps"],
                    &[
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/status",
                        "statefulsets/scale",
                        "daemonsets",
                        "daemonsets/status",
                        "controllerrevisions",
                    ],
                ),
                r(
                    RW,
                    &["batch"],
                    &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
                ),
                r(RW, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    RW,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    RW,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                // The HorizontalPodAutoscaler: resource metrics and any target's scale.
                r(&["get", "list"], &["metrics.k8s.io"], &["pods", "nodes"]),
                r(&["get", "update", "patch"], &["*"], &["*/scale"]),
                r(
                    RW,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status"],
                ),
                r(RW, &["rbac.authorization.k8s.io"], &["clusterroles"]),
                r(
                    &["escalate"],
                    &["rbac.authorization.k8s.io"],
                    &["clusterroles"],
                ),
                r(
                    READ,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings", "clusterrolebindings"],
                ),
                r(READ, &["*"], &["*"]),
                // Namespace deletion and garbage collection touch every kind.
                r(
                    &["delete", "deletecollection", "patch", "update"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        role(
            "system:kube-dns",
            vec![
                r(&["list", "watch"], &[""], &["endpoints", "services"]),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        role(
            "system:auth-delegator",
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
    ];
    // Aggregate view into edit into admin (each level sees the level below already filled).
    for (target, label) in [("view", TO_VIEW), ("edit", TO_EDIT), ("admin", TO_ADMIN)] {
        let mut rules: Vec<PolicyRule> = Vec::new();
        let mut sources: Vec<&BootstrapRole> = roles
            .iter()
            .filter(|r| r.name != target && r.labels.contains(&(label, "true")))
            .collect();
        sources.sort_by_key(|r| r.name);
        for s in sources {
            for rule in &s.rules {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
        if let Some(t) = roles.iter_mut().find(|r| r.name == target) {
            t.rules = rules;
        }
    }
    roles
}

/// One bootstrap ClusterRoleBinding: name, role, subjects (kind, name, namespace).
pub type BootstrapBinding = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str, &'static str)>,
);

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<BootstrapBinding> {
    use crate::auth::user::{AUTHENTICATED, MASTERS, UNAUTHENTICATED};
    vec![
        (
            "cluster-admin",
            "cluster-admin",
            vec![("Group", MASTERS, "")],
        ),
        (
            "system:basic-user",
            "system:basic-user",
            vec![("Group", AUTHENTICATED, "")],
        ),
        (
            "system:discovery",
            "system:discovery",
            vec![("Group", AUTHENTICATED, "")],
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![("Group", AUTHENTICATED, ""), ("Group", UNAUTHENTICATED, "")],
        ),
        // Upstream keeps `system:node` unbound (the Node authorizer grants nodes their access).
        ("system:node", "system:node", vec![]),
        (
            "system:node-proxier",
            "system:node-proxier",
            vec![("User", "system:kube-proxy", "")],
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![("User", "system:kube-scheduler", "")],
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![("User", "system:kube-controller-manager", "")],
        ),
        (
            "volume-scheduler",
            "system:volume-scheduler",
            vec![("User", "system:kube-scheduler", "")],
        ),
        (
            "system:kennel:local-provisioner",
            "system:kennel:local-provisioner",
            vec![("User", LOCAL_PROVISIONER, "")],
        ),
        (
            "system:kube-dns",
            "system:kube-dns",
            vec![("ServiceAccount", "kube-dns", "kube-system")],
        ),
    ]
}
