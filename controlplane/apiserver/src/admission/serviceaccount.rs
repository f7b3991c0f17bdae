//! Upstream's ServiceAccount admission plugin (`plugin/pkg/admission/serviceaccount`), for Pod
//! creation:
//!
//! 1. `spec.serviceAccountName` defaults to `default` (the deprecated `spec.serviceAccount` is
//!    read when only it is set, and is kept equal to it).
//! 2. The ServiceAccount must exist: 403 `error looking up service account <ns>/<name>:
//!    serviceaccount "<name>" not found` otherwise. The `default` ServiceAccount is created
//!    asynchronously by the serviceaccount controller, so for it the lookup is retried as upstream
//!    does (10 attempts, 100–200 ms apart); a pod refused meanwhile is created again by its
//!    controller (ReplicaSet, Job, ...) on its next sync, so it never fails forever.
//! 3. Unless `automountServiceAccountToken` is false (the pod's value wins over the
//!    ServiceAccount's), the projected volume `kube-api-access-<5 random>` (token, `ca.crt` from
//!    the `kube-root-ca.crt` ConfigMap, `namespace`) is added and mounted read-only at
//!    `/var/run/secrets/kubernetes.io/serviceaccount` in every container, initContainer and
//!    ephemeral container that does not already mount something there.
//! 4. A pod without `imagePullSecrets` gets the ServiceAccount's.
//!
//! Mirror pods (annotation `kubernetes.io/config.mirror`) are not changed, and may not reference
//! a ServiceAccount, Secrets or token projections.

use std::time::Duration;

use serde_json::{json, Value};

use crate::handlers::{decode_as, ApiState};
use crate::registry::ResourceDef;
use crate::status::ApiError;

/// The plugin's name (upstream's `--disable-admission-plugins=ServiceAccount`).
pub const PLUGIN_NAME: &str = "ServiceAccount";
/// The ServiceAccount a pod that names none runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Prefix of the token volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access";
/// Where the token, `ca.crt` and `namespace` appear in containers.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap the root-CA publisher keeps in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Upstream's bound token lifetime (`WarnOnlyBoundTokenExpirationSeconds`, 1 h + 7 s).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The annotation that marks a mirror pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Lookups of the `default` ServiceAccount before a pod is refused (upstream: 10).
const DEFAULT_SA_ATTEMPTS: usize = 10;

/// The pod's ServiceAccount name after defaulting; sets both `serviceAccountName` and the
/// deprecated `serviceAccount` to it.
pub fn default_name(pod: &mut Value) -> String {
    let spec = &mut pod["spec"];
    let named = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let name = named(&spec["serviceAccountName"])
        .or_else(|| named(&spec["serviceAccount"]))
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
    if spec.is_object() {
        spec["serviceAccountName"] = json!(name);
        spec["serviceAccount"] = json!(name);
    }
    name
}

/// Whether the token is mounted: the pod's `automountServiceAccountToken`, else the
/// ServiceAccount's, else true.
pub fn should_automount(sa: &Value, pod: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// Upstream's `TokenVolumeSource()` as the volume `name`.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Adds the token volume (named `kube-api-access-<suffix()>` unless the pod already has a
/// `kube-api-access-*` volume) and its read-only mount to every container that has no mount at
/// [`TOKEN_MOUNT_PATH`]; the volume is added only when some container mounts it.
pub fn mount_token(pod: &mut Value, suffix: impl FnOnce() -> String) {
    let prefix = format!("{VOLUME_PREFIX}-");
    let existing = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with(&prefix))
        .map(str::to_string);
    let has_volume = existing.is_some();
    let name = existing.unwrap_or_else(|| format!("{prefix}{}", suffix()));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = pod["spec"].get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let mounted = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"].as_str() == Some(TOKEN_MOUNT_PATH));
            if mounted {
                continue;
            }
            match c["volumeMounts"].as_array_mut() {
                Some(list) => list.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needed = true;
        }
    }
    if needed && !has_volume {
        match pod["spec"]["volumes"].as_array_mut() {
            Some(list) => list.push(token_volume(&name)),
            None => pod["spec"]["volumes"] = json!([token_volume(&name)]),
        }
    }
}

/// A pod without `imagePullSecrets` gets the ServiceAccount's.
pub fn add_image_pull_secrets(sa: &Value, pod: &mut Value) {
    let has = pod["spec"]["imagePullSecrets"]
        .as_array()
        .is_some_and(|l| !l.is_empty());
    let theirs: Vec<Value> = sa["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| json!({"name": s["name"].as_str().unwrap_or("")}))
        .collect();
    if !has && !theirs.is_empty() {
        pod["spec"]["imagePullSecrets"] = Value::Array(theirs);
    }
}

/// Whether the pod is a mirror pod.
pub fn is_mirror(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get(MIRROR_POD_ANNOTATION)
        .is_some()
}

/// Why a mirror pod is refused (upstream's messages), if it is.
pub fn mirror_violation(pod: &Value) -> Option<&'static str> {
    let spec = &pod["spec"];
    // kennel's Pod defaulting sets `default` before admission runs; only another name is the
    // pod's own reference.
    let named = |v: &Value| {
        v.as_str()
            .is_some_and(|s| !s.is_empty() && s != DEFAULT_SERVICE_ACCOUNT)
    };
    if named(&spec["serviceAccountName"]) || named(&spec["serviceAccount"]) {
        return Some("a mirror pod may not reference service accounts");
    }
    let volumes = spec["volumes"].as_array().into_iter().flatten();
    let mut secret_refs = false;
    let mut token = false;
    for v in volumes {
        secret_refs |= v["secret"].is_object();
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            secret_refs |= s["secret"].is_object();
            token |= s["serviceAccountToken"].is_object();
        }
    }
    secret_refs |= spec["imagePullSecrets"]
        .as_array()
        .is_some_and(|l| !l.is_empty());
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[key].as_array().into_iter().flatten() {
            secret_refs |= c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["valueFrom"]["secretKeyRef"].is_object());
            secret_refs |= c["envFrom"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["secretRef"].is_object());
        }
    }
    if secret_refs {
        Some("a mirror pod may not reference secrets")
    } else if token {
        Some("a mirror pod may not use ServiceAccountToken volume projections")
    } else {
        None
    }
}

fn forbidden(pod: &Value, why: &str) -> ApiError {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    ApiError::Forbidden(format!("pods \"{name}\" is forbidden: {why}"))
}

/// The ServiceAccount `ns/name`, looked up as upstream's `getServiceAccount` (retried for
/// `default`, which the controller creates asynchronously).
async fn service_account(
    state: &ApiState,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let def = super::core("serviceaccounts");
    let key = def.key(Some(ns), name);
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
        DEFAULT_SA_ATTEMPTS
    } else {
        1
    };
    let interval = Duration::from_millis(100 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100);
    for i in 0..attempts {
        if i != 0 {
            tokio::time::sleep(interval).await;
        }
        let kv = state
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(kv) = kv {
            return decode_as(def, &kv).map(Some);
        }
    }
    Ok(None)
}

async fn namespace_active(state: &ApiState, ns: &str) -> Result<bool, ApiError> {
    let def = super::core("namespaces");
    let kv = state
        .store
        .get(&def.key(None, ns))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(match kv {
        Some(kv) => decode_as(def, &kv)?["status"]["phase"] != "Terminating",
        None => false,
    })
}

/// Mutating ServiceAccount admission of a new Pod in `ns`.
pub async fn admit(
    state: &ApiState,
    def: &ResourceDef,
    ns: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    if def.strategy_kind() != "Pod" || !pod["spec"].is_object() {
        return Ok(());
    }
    if is_mirror(pod) {
        return match mirror_violation(pod) {
            Some(why) => Err(forbidden(pod, why)),
            None => Ok(()),
        };
    }
    let name = default_name(pod);
    // NamespaceLifecycle runs before this plugin upstream: a missing or terminating namespace
    // is its error (404 / 403, which the create handler reports next), not a missing
    // ServiceAccount.
    if !namespace_active(state, ns).await? {
        return Ok(());
    }
    let Some(sa) = service_account(state, ns, &name).await? else {
        return Err(forbidden(
            pod,
            &format!(
                "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
            ),
        ));
    };
    if should_automount(&sa, pod) {
        mount_token(pod, crate::defaults::random_suffix);
    }
    add_image_pull_secrets(&sa, pod);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    fn fixed() -> String {
        "abcde".into()
    }

    #[test]
    fn defaults_the_service_account_and_keeps_the_deprecated_field() {
        let mut p = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(default_name(&mut p), "default");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");

        let mut p = pod(json!({"serviceAccount": "old", "containers": []}));
        assert_eq!(default_name(&mut p), "old");
        assert_eq!(p["spec"]["serviceAccountName"], "old");

        let mut p = pod(json!({"serviceAccountName": "new", "serviceAccount": "old"}));
        assert_eq!(default_name(&mut p), "new");
        assert_eq!(p["spec"]["serviceAccount"], "new");
    }

    #[test]
    fn automount_pod_wins_then_service_account_then_true() {
        let sa_off = json!({"automountServiceAccountToken": false});
        let sa_on = json!({"automountServiceAccountToken": true});
        let sa_unset = json!({});
        let p_off = pod(json!({"automountServiceAccountToken": false}));
        let p_on = pod(json!({"automountServiceAccountToken": true}));
        let p_unset = pod(json!({}));
        assert!(should_automount(&sa_unset, &p_unset));
        assert!(!should_automount(&sa_off, &p_unset));
        assert!(should_automount(&sa_on, &p_unset));
        assert!(should_automount(&sa_off, &p_on));
        assert!(!should_automount(&sa_on, &p_off));
    }

    #[test]
    fn mounts_the_projected_volume_as_upstream() {
        let mut p = pod(json!({
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}, {"name": "b"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }));
        mount_token(&mut p, fixed);
        let want_mount = json!({"name": "kube-api-access-abcde", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"],
            json!([want_mount])
        );
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}, want_mount])
        );
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"],
            json!([want_mount])
        );
        assert_eq!(
            p["spec"]["volumes"][1],
            json!({
                "name": "kube-api-access-abcde",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            })
        );
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn random_volume_names_are_five_lowercase_alphanumerics() {
        let mut p = pod(json!({"containers": [{"name": "a"}]}));
        mount_token(&mut p, crate::defaults::random_suffix);
        let name = p["spec"]["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let suffix = name.strip_prefix("kube-api-access-").expect("prefix");
        assert_eq!(suffix.len(), 5);
        assert!(suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn an_existing_mount_at_the_path_is_left_alone() {
        let own = json!({"name": "mine", "mountPath": TOKEN_MOUNT_PATH});
        let mut p = pod(json!({
            "containers": [{"name": "a", "volumeMounts": [own]}],
            "volumes": [{"name": "mine", "secret": {"secretName": "s"}}],
        }));
        let before = p.clone();
        mount_token(&mut p, fixed);
        assert_eq!(p, before, "no container needs the volume, so none is added");

        // Only the container without its own mount gets the token.
        let mut p = pod(json!({
            "containers": [{"name": "a", "volumeMounts": [own]}, {"name": "b"}],
            "volumes": [{"name": "mine", "secret": {"secretName": "s"}}],
        }));
        mount_token(&mut p, fixed);
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([own]));
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn an_existing_token_volume_is_reused() {
        let mut p = pod(json!({
            "containers": [{"name": "a"}],
            "volumes": [token_volume("kube-api-access-zzzzz")],
        }));
        mount_token(&mut p, fixed);
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-zzzzz"
        );
    }

    #[test]
    fn ephemeral_containers_get_the_mount_too() {
        let mut p = pod(json!({
            "containers": [{"name": "a"}],
            "ephemeralContainers": [{"name": "debug"}],
        }));
        mount_token(&mut p, fixed);
        assert_eq!(
            p["spec"]["ephemeralContainers"][0]["volumeMounts"][0]["mountPath"],
            TOKEN_MOUNT_PATH
        );
    }

    #[test]
    fn image_pull_secrets_come_from_the_service_account_when_the_pod_has_none() {
        let sa = json!({"imagePullSecrets": [{"name": "reg"}]});
        let mut p = pod(json!({"containers": []}));
        add_image_pull_secrets(&sa, &mut p);
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        let mut p = pod(json!({"imagePullSecrets": [{"name": "own"}]}));
        add_image_pull_secrets(&sa, &mut p);
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "own"}]));
        let mut p = pod(json!({}));
        add_image_pull_secrets(&json!({}), &mut p);
        assert!(p["spec"]["imagePullSecrets"].is_null());
    }

    #[test]
    fn mirror_pods_may_not_reference_identities() {
        let mirror = |spec: Value| {
            let mut p = pod(spec);
            p["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: "x"});
            p
        };
        assert!(is_mirror(&mirror(json!({}))));
        assert!(!is_mirror(&pod(json!({}))));
        assert_eq!(mirror_violation(&mirror(json!({"containers": []}))), None);
        assert_eq!(
            mirror_violation(&mirror(json!({"serviceAccountName": "builder"}))),
            Some("a mirror pod may not reference service accounts")
        );
        assert_eq!(
            mirror_violation(&mirror(
                json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]})
            )),
            Some("a mirror pod may not reference secrets")
        );
        assert_eq!(
            mirror_violation(&mirror(
                json!({"volumes": [token_volume("kube-api-access-x")]})
            )),
            Some("a mirror pod may not use ServiceAccountToken volume projections")
        );
    }
}
