//! Controller references: which objects a controller owns, adoption of matching orphans and
//! release of owned objects that stopped matching (upstream's `ControllerRefManager`).

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::selector::{labels_of, Selector};

/// Errors while claiming.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// An adopt or release patch failed.
    #[error("patch {name}: {source}")]
    Patch {
        /// The dependent.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The fresh owner differs from the cached one (deleted, recreated, or being deleted).
    #[error("cannot adopt: {0}")]
    CannotAdopt(String),
}

/// The owning controller, as its dependents' `ownerReferences` name it.
#[derive(Debug, Clone)]
pub struct OwnerInfo {
    /// `apps/v1`, `v1`.
    pub api_version: String,
    /// `ReplicaSet`, ...
    pub kind: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// The owner has a deletionTimestamp.
    pub deleting: bool,
}

impl OwnerInfo {
    /// Owner info of `obj`.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: obj.name_any(),
            uid: obj.meta().uid.clone().unwrap_or_default(),
            namespace: obj.namespace().unwrap_or_default(),
            deleting: obj.meta().deletion_timestamp.is_some(),
        }
    }

    /// The controller reference dependents carry (`controller` and `blockOwnerDeletion` set).
    pub fn controller_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The controller reference of `obj`, if any.
pub fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// What to do with one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ours, keep.
    Keep,
    /// Ours but no longer matching: release.
    Release,
    /// Orphan matching the selector: adopt.
    Adopt,
    /// Not ours.
    Ignore,
}

/// Upstream's `ClaimObject` decision for one candidate.
pub fn verdict<K: Resource>(owner: &OwnerInfo, selector: &Selector, obj: &K) -> Verdict {
    let matches = selector.matches(&labels_of(&obj.meta().labels));
    match controller_of(obj) {
        Some(r) if r.uid != owner.uid => Verdict::Ignore,
        Some(_) if matches => Verdict::Keep,
        Some(_) if owner.deleting => Verdict::Ignore,
        Some(_) => Verdict::Release,
        None if owner.deleting || !matches || obj.meta().deletion_timestamp.is_some() => {
            Verdict::Ignore
        }
        None if obj.meta().namespace.as_deref().unwrap_or("") != owner.namespace => Verdict::Ignore,
        None => Verdict::Adopt,
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Claims `candidates` for `owner`: returns those it owns afterwards. Adoption first checks
/// `recheck` (a fresh read of the owner) once, so a deleted or recreated owner adopts nothing.
pub async fn claim<C, F, Fut>(
    api: &Api<C>,
    owner: &OwnerInfo,
    selector: &Selector,
    candidates: Vec<Arc<C>>,
    recheck: F,
) -> Result<Vec<Arc<C>>, ClaimError>
where
    C: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), ClaimError>>,
{
    let mut recheck = Some(recheck);
    let mut out = Vec::new();
    for obj in candidates {
        let name = obj.name_any();
        let uid = obj.meta().uid.clone().unwrap_or_default();
        match verdict(owner, selector, &*obj) {
            Verdict::Keep => out.push(obj),
            Verdict::Ignore => {}
            Verdict::Release => {
                let patch = json!({"metadata": {
                    "ownerReferences": [{"$patch": "delete", "uid": owner.uid}],
                    "uid": uid,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(owner = %owner.name, %name, "released");
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(source) => return Err(ClaimError::Patch { name, source }),
                }
            }
            Verdict::Adopt => {
                if let Some(f) = recheck.take() {
                    f().await?;
                }
                let patch = json!({"metadata": {
                    "ownerReferences": [owner.controller_ref()],
                    "uid": uid,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(adopted) => {
                        tracing::info!(owner = %owner.name, %name, "adopted");
                        out.push(Arc::new(adopted));
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(source) => return Err(ClaimError::Patch { name, source }),
                }
            }
        }
    }
    Ok(out)
}

/// The recheck of upstream's `RecheckDeletionTimestamp`: the owner read fresh must have the
/// cached uid and no deletionTimestamp.
pub async fn recheck_owner<K>(api: &Api<K>, owner: &OwnerInfo) -> Result<(), ClaimError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let fresh = api
        .get_opt(&owner.name)
        .await
        .map_err(|e| ClaimError::CannotAdopt(format!("{}/{}: {e}", owner.namespace, owner.name)))?;
    let Some(fresh) = fresh else {
        return Err(ClaimError::CannotAdopt(format!(
            "{}/{} is gone",
            owner.namespace, owner.name
        )));
    };
    if fresh.meta().uid.as_deref() != Some(owner.uid.as_str()) {
        return Err(ClaimError::CannotAdopt(format!(
            "original {}/{} is gone: got uid {}, wanted {}",
            owner.namespace,
            owner.name,
            fresh.meta().uid.clone().unwrap_or_default(),
            owner.uid
        )));
    }
    if fresh.meta().deletion_timestamp.is_some() {
        return Err(ClaimError::CannotAdopt(format!(
            "{}/{} has just been deleted",
            owner.namespace, owner.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::collections::BTreeMap;

    fn owner(deleting: bool) -> OwnerInfo {
        OwnerInfo {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: "u1".into(),
            namespace: "ns".into(),
            deleting,
        }
    }

    fn pod(app: &str, ctrl: Option<&str>, deleting: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.labels = Some(BTreeMap::from([("app".to_string(), app.to_string())]));
        p.metadata.owner_references = ctrl.map(|u| {
            vec![OwnerReference {
                uid: u.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        if deleting {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        p
    }

    #[test]
    fn claim_table() {
        let sel = Selector::from_map(&BTreeMap::from([("app".to_string(), "web".to_string())]));
        let cases = [
            (owner(false), pod("web", Some("u1"), false), Verdict::Keep),
            (owner(false), pod("db", Some("u1"), false), Verdict::Release),
            (owner(true), pod("db", Some("u1"), false), Verdict::Ignore),
            (
                owner(false),
                pod("web", Some("other"), false),
                Verdict::Ignore,
            ),
            (owner(false), pod("web", None, false), Verdict::Adopt),
            (owner(true), pod("web", None, false), Verdict::Ignore),
            (owner(false), pod("web", None, true), Verdict::Ignore),
            (owner(false), pod("db", None, false), Verdict::Ignore),
        ];
        for (i, (o, p, want)) in cases.iter().enumerate() {
            assert_eq!(verdict(o, &sel, p), *want, "case {i}");
        }
    }
}
