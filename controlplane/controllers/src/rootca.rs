//! Upstream's root-CA publisher (`pkg/controller/certificates/rootcacertpublisher`): every
//! active namespace has the ConfigMap `kube-root-ca.crt` whose `data` is exactly
//! `{"ca.crt": <the cluster CA PEM>}` with the `kubernetes.io/description` annotation; it is
//! created when the namespace appears, recreated when deleted and put back when changed. Pods
//! read it through the `kube-api-access-*` volume ServiceAccount admission adds.
//!
//! The controller keeps its own two watches (namespaces, and ConfigMaps named
//! `kube-root-ca.crt`), so it depends on nothing but a client and the PEM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;

/// The ConfigMap's name.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key holding the PEM bundle.
pub const CA_KEY: &str = "ca.crt";
/// The annotation describing the ConfigMap.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's description.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
    when using internal endpoints such as the internal service IP or kubernetes.default.svc. \
    No other usage is guaranteed across distributions of Kubernetes clusters.";

/// How long a failed namespace waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Errors of one namespace sync.
#[derive(Debug, thiserror::Error)]
pub enum RootCaError {
    /// Reading the ConfigMap failed.
    #[error("get configmap {ns}/kube-root-ca.crt: {source}")]
    Get {
        /// Namespace.
        ns: String,
        /// Cause.
        source: kube::Error,
    },
    /// Creating the ConfigMap failed.
    #[error("create configmap {ns}/kube-root-ca.crt: {source}")]
    Create {
        /// Namespace.
        ns: String,
        /// Cause.
        source: kube::Error,
    },
    /// Updating the ConfigMap failed (a conflict is retried).
    #[error("update configmap {ns}/kube-root-ca.crt: {source}")]
    Update {
        /// Namespace.
        ns: String,
        /// Cause.
        source: kube::Error,
    },
}

/// The PEM bundle of a client configuration's root certificates (what a kubeconfig's
/// `certificate-authority-data` or the in-cluster `ca.crt` held), if it has any.
pub fn ca_pem_from(cfg: &kube::Config) -> Option<String> {
    let certs = cfg.root_cert.as_ref().filter(|c| !c.is_empty())?;
    Some(certs.iter().map(|der| pem_of(der)).collect())
}

/// One DER certificate as PEM.
pub fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// What the publisher needs.
struct Publisher {
    client: kube::Client,
    ca_pem: String,
}

/// The ConfigMap `ns` should have.
pub fn desired(ns: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(CA_KEY.to_string(), ca_pem.to_string())])),
        ..Default::default()
    }
}

/// `cm` fixed up to hold exactly the CA and the description (None: already right).
pub fn repaired(cm: &ConfigMap, ca_pem: &str) -> Option<ConfigMap> {
    let data = BTreeMap::from([(CA_KEY.to_string(), ca_pem.to_string())]);
    let described = cm
        .annotations()
        .get(DESCRIPTION_ANNOTATION)
        .is_some_and(|d| !d.is_empty());
    if cm.data.as_ref() == Some(&data) && described {
        return None;
    }
    let mut fixed = cm.clone();
    fixed.data = Some(data);
    fixed
        .annotations_mut()
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Some(fixed)
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Publisher>) -> Result<Action, RootCaError> {
    let name = ns.name_any();
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let current = api
        .get_opt(CONFIG_MAP)
        .await
        .map_err(|source| RootCaError::Get {
            ns: name.clone(),
            source,
        })?;
    match current {
        None => match api
            .create(&PostParams::default(), &desired(&name, &ctx.ca_pem))
            .await
        {
            Ok(_) => tracing::info!(namespace = %name, "published kube-root-ca.crt"),
            // The namespace is gone or terminating: nothing to publish (upstream does not
            // retry either).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {}
            Err(source) => return Err(RootCaError::Create { ns: name, source }),
        },
        Some(cm) => {
            if let Some(fixed) = repaired(&cm, &ctx.ca_pem) {
                api.replace(CONFIG_MAP, &PostParams::default(), &fixed)
                    .await
                    .map_err(|source| RootCaError::Update {
                        ns: name.clone(),
                        source,
                    })?;
                tracing::info!(namespace = %name, "kube-root-ca.crt put back");
            }
        }
    }
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, err: &RootCaError, _: Arc<Publisher>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), "root CA publisher: {err}");
    Action::requeue(RETRY)
}

/// Runs the publisher (forever) with `ca_pem` as every namespace's `ca.crt`.
pub async fn run(client: kube::Client, ca_pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let ctx = Arc::new(Publisher { client, ca_pem });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            config_maps,
            watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
            |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("root CA publisher: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_config_map_is_upstreams() {
        let cm = desired("shop", "PEM");
        let v = serde_json::to_value(&cm).unwrap();
        assert_eq!(v["metadata"]["name"], "kube-root-ca.crt");
        assert_eq!(v["data"], serde_json::json!({"ca.crt": "PEM"}));
        assert_eq!(
            v["metadata"]["annotations"]["kubernetes.io/description"],
            "Contains a CA bundle that can be used to verify the kube-apiserver when using \
             internal endpoints such as the internal service IP or kubernetes.default.svc. No \
             other usage is guaranteed across distributions of Kubernetes clusters."
        );
        assert!(repaired(&cm, "PEM").is_none());
    }

    #[test]
    fn changed_data_or_annotation_is_put_back() {
        let mut cm = desired("shop", "PEM");
        cm.data.as_mut().unwrap().insert("extra".into(), "x".into());
        let fixed = repaired(&cm, "PEM").expect("extra key removed");
        assert_eq!(fixed.data, desired("shop", "PEM").data);
        let mut cm = desired("shop", "OLD");
        cm.metadata.annotations = None;
        let fixed = repaired(&cm, "PEM").expect("fixed");
        assert_eq!(fixed.data, desired("shop", "PEM").data);
        assert_eq!(fixed.annotations()[DESCRIPTION_ANNOTATION], DESCRIPTION);
    }

    #[test]
    fn pem_lines_are_64_columns() {
        let pem = pem_of(&[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        let mut cfg = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        cfg.root_cert = Some(vec![vec![1, 2, 3]]);
        assert_eq!(
            ca_pem_from(&cfg).as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n")
        );
    }
}
